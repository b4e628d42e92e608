SELECT count(*) FROM authaudit.attack_sources('tenant-7', now() - interval '1 day', now());
