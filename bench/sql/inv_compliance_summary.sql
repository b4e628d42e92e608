SELECT count(*) FROM authaudit.compliance_summary('tenant-7', now() - interval '1 day', now());
