"""Archive a MySQL/MariaDB target's binary logs as a replication client (make run supervises it)."""

import json
import signal


from covet.errors import UsageError
from core.commands import CovetCommand
from archiving.services.binlog_archiver import BinlogArchiver
from backups.services.targets import get_target


class Command(CovetCommand):
    help = ("Pull a MySQL/MariaDB target's binlogs with mariadb-binlog --read-from-remote-server and archive "
            "each completed file (the live one as a partial every --archive-timeout seconds). Runs until "
            "SIGTERM; --once copies up to the server's current end, archives and exits. Exit codes: 0 ok, "
            "1 another archiver runs, 2 usage, 3 not found, 5 server or tool failed, 6 storage.")

    def add_arguments(self, parser):
        parser.add_argument("--target", required=True, help="a MySQL/MariaDB target with PITR set up (setup_pitr)")
        parser.add_argument("--archive-timeout", type=float, default=60.0,
                            help="ship the live binlog as a partial at least this often, in seconds (bounds the RPO)")
        parser.add_argument("--once", action="store_true",
                            help="archive what the server has now, then exit (cron, tests)")
        parser.add_argument("--spool-dir", help="where binlogs are copied before shipping "
                                                "(default: COVET_TMP_DIR/binlog-spool/TARGET)")
        parser.add_argument("--encryption-password-file", help="passphrase file of the archive key's wrapping key")
        parser.add_argument("--key-file", help="key file of the archive key's wrapping key")
        parser.add_argument("--output-format", choices=["text", "json"], default="text")

    def handle(self, *args, **opts):
        target = get_target(opts["target"])
        if target.engine != "mysql":
            raise UsageError(f"target {target.name} is {target.engine}; binlog_archive is for MySQL/MariaDB "
                             "(PostgreSQL targets use run_shipper)")
        if opts["archive_timeout"] <= 0:
            raise UsageError("--archive-timeout must be a positive number of seconds")
        archiver = BinlogArchiver(target, opts["archive_timeout"], opts["spool_dir"],
                                  opts["encryption_password_file"], opts["key_file"])
        if not opts["once"]:
            # SIGTERM (make run, systemd) ends the loop cleanly: the live file is shipped first.
            signal.signal(signal.SIGTERM, lambda *_: archiver.stop())
            signal.signal(signal.SIGINT, lambda *_: archiver.stop())
        result = archiver.run(once=opts["once"])
        if opts["output_format"] == "json":
            self.stdout.write(json.dumps(result, indent=2))
            return
        lines = [f"archived {len(result['archived'])} completed binlog(s) of {target.name}"
                 + (f" ({result['archived'][0]} to {result['archived'][-1]})" if result["archived"] else "")]
        if result["partial"]:
            lines.append(f"live file {result['partial']} archived as a partial")
        for gap in result["purged"]:
            lines.append(f"gap: {gap['first_missing']} to {gap['last_missing']} were purged on the server before "
                         "they were archived; recovery cannot cross them")
        self.stdout.write("\n".join(lines))
