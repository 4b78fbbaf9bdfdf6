"""Archiving for point-in-time recovery: WAL and binlogs leave the servers and land in the archive.

``services/archive.py`` is a target's archive (its data key, storing and fetching
files), ``services/windows.py`` what the archive covers (ranges, gaps, recoverable
windows, base backups' WAL). PostgreSQL: ``covet_wal.py`` is run by the server
(as its OS user, once per segment) as ``archive_command`` and
``restore_command`` and imports nothing but the standard library;
``services/server.py`` is the shipper it talks to (``manage.py run_shipper``),
``services/pg_setup.py`` what ``manage.py setup_pitr`` prints, applies and checks.
MySQL/MariaDB: ``services/binlog_archiver.py`` reads binlogs as a replication client
(``manage.py binlog_archive``), ``services/binlog_setup.py`` checks the server.
"""
