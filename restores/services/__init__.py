"""The restores app's services: a restore from a backup, and point-in-time recovery (requests, PostgreSQL, MySQL/MariaDB, the WAL spool)."""
