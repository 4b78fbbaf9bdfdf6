"""WAL shipping: the light archive entry point PostgreSQL runs, and the long-running shipper it talks to.

``covet_wal.py`` is run by PostgreSQL (as its OS user, once per segment) as
``archive_command`` and ``restore_command``; it imports nothing but the
standard library. ``server.py`` is the shipper (``manage.py run_shipper``),
``pg_setup.py`` what ``manage.py setup_pitr`` prints, applies and checks.
"""
