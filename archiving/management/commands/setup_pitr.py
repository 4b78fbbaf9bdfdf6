"""Set up point-in-time recovery for a target: archive key, server settings, and a check of the whole path."""

from archiving.services import archive
from backups.services import keys
from covet.errors import UsageError
from core.commands import CovetCommand
from archiving.services import paths, pg_setup
from backups.services.storages import get_storage
from backups.services.targets import get_target
from core.audit import cli_source


class Command(CovetCommand):
    help = ("Turn WAL archiving on for a PostgreSQL target (binlog archiving for MySQL/MariaDB): create its archive "
            "key, print the server settings (the archive_command printed is stable: servers keep it), apply them "
            "with --apply, and check with a forced segment switch that must arrive in storage (--check; also after "
            "--apply). Exit codes: 0 ok, 2 usage, 3 not found, 5 server or archiving check failed, 6 storage.")

    def add_arguments(self, parser):
        parser.add_argument("--target", required=True, help="a registered PostgreSQL or MySQL/MariaDB target")
        parser.add_argument("--storage", help="where the archive goes (default: the default storage); set once")
        parser.add_argument("--encryption-password-file", help="passphrase file for the archive key's wrapping key")
        parser.add_argument("--key-file", help="key file (mode 0600) for the archive key's wrapping key")
        parser.add_argument("--archive-timeout", type=int, default=60,
                            help="seconds after which PostgreSQL closes a segment that is not full (bounds the RPO)")
        parser.add_argument("--socket-dir", help="the shipper's socket directory (default as for run_shipper)")
        parser.add_argument("--apply", action="store_true",
                            help="ALTER SYSTEM the settings and reload (needs a superuser), then check")
        parser.add_argument("--check", action="store_true",
                            help="force a segment switch and wait until it is archived")
        parser.add_argument("--timeout", type=float, default=60.0, help="seconds the check waits for the segment")

    def handle(self, *args, **opts):
        target = get_target(opts["target"])
        if target.engine == "mysql":
            from archiving.services.binlog_setup import setup

            setup(target, opts, self.stdout)
            return
        if target.engine != "postgresql":
            raise UsageError(f"target {target.name} is {target.engine}: point-in-time recovery needs PostgreSQL "
                             "or MySQL/MariaDB")
        source = cli_source()
        storage = get_storage(opts["storage"]) if opts["storage"] else None
        key_source = keys.key_ref(opts["encryption_password_file"], opts["key_file"])
        target = archive.enable_pitr(target, key_source=key_source, storage=storage)
        directory = paths.socket_dir(opts["socket_dir"])
        paths.check_reachable(target, directory)
        settings = pg_setup.wanted_settings(target, directory, opts["archive_timeout"])
        self._print_settings(target, settings)
        changed, pending = pg_setup.setup(target, settings, opts["apply"], source)
        if opts["apply"]:
            self.stdout.write(f"applied: {', '.join(changed) or 'nothing (the server already had these settings)'}")
            if pending:
                self.stdout.write(f"restart PostgreSQL for {' and '.join(pending)} to take effect, then run "
                                  f"'manage.py setup_pitr --target {target.name} --check'")
        if (opts["check"] or opts["apply"]) and not pending:
            name, seconds = pg_setup.verify(target, paths.socket_path(target, directory), opts["timeout"], source)
            self.stdout.write(f"check ok: segment {name} was archived {seconds:.1f}s after the switch")

    def _print_settings(self, target, settings: dict[str, str]) -> None:
        where = archive.archive_storage(target).name
        self.stdout.write(f"archiving is on for target {target.name}: storage {where}, archive key "
                          f"{target.archive_key.get('key_id') or 'none'}\n"
                          "PostgreSQL settings (postgresql.conf, or --apply for ALTER SYSTEM; "
                          "wal_level may also be logical):")
        for line in pg_setup.conf_lines(settings):
            self.stdout.write(f"  {line}")
        self.stdout.write(f"the shipper must run on this host: manage.py run_shipper --target {target.name} "
                          "(make run starts it)")
