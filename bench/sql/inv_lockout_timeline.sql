SELECT count(*) FROM authaudit.lockout_timeline('tenant-7', now() - interval '1 day', now());
