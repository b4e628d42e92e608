SELECT count(*), sum(locks) FROM authaudit.targeted_accounts('tenant-7', now() - interval '1 day', now());
