SELECT count(*) FROM authaudit.successes_after_failures('tenant-7', now() - interval '1 day', now());
