"""Restore a backup into a new target, or download its plaintext dump."""

import json
from argparse import BooleanOptionalAction

from restores import jobs
from covet.engines import RestoreOptions
from covet.errors import UsageError
from core.commands import CovetCommand, progress_bar
from restores.services.pitr import create_pitr_restore, destination, recovery_target
from restores.services.restore import create_restore, run_restore
from backups.services.catalog import get_backup
from backups.services.targets import get_target
from core.audit import cli_source


class Command(CovetCommand):
    help = ("Restore a backup into a new database (for SQLite a new file), or with --download-only write the "
            "decrypted dump to --output-dir; with a recovery target (--pitr-target, --target-lsn, ...) recover "
            "to a point in time. Exit codes: 0 ok, 1 other, 2 usage or wrong key, 3 not found, "
            "4 damaged, 5 database tool, 6 storage.")

    def add_arguments(self, parser):
        parser.add_argument("--backup-id", help="the backup to restore; for PITR the newest suitable one by default")
        parser.add_argument("--target-database", help="new database name; for SQLite a new file path")
        parser.add_argument("--clean", action="store_true",
                            help="replace an existing database (only after the whole backup was authenticated)")
        parser.add_argument("--table", action="append", default=[], metavar="SCHEMA.NAME",
                            help="restore only this table (repeatable)")
        parser.add_argument("--with-globals", action="store_true",
                            help="also restore roles (PostgreSQL) or users and grants (MySQL) saved with the backup")
        parser.add_argument("--parallel", type=int, default=1, help="parallel restore jobs (PostgreSQL)")
        parser.add_argument("--download-only", action="store_true", help="write the decrypted dump, restore nothing")
        parser.add_argument("--output-dir", help="directory for --download-only")
        parser.add_argument("--encryption-password-file")
        parser.add_argument("--key-file")
        parser.add_argument("--output-format", choices=["text", "json"], default="text")
        parser.add_argument("--enqueue", action="store_true", help="hand the work to a worker; print the job id")
        pitr = parser.add_argument_group("point-in-time recovery")
        pitr.add_argument("--target", help="the server (target) to recover; needed without --backup-id")
        pitr.add_argument("--pitr-target", metavar="TIME|latest",
                          help="recover to this time (UTC unless an offset is given) or to the latest archived "
                               "transaction")
        pitr.add_argument("--target-lsn", help="PostgreSQL: recover to this WAL position, e.g. 0/16B3748")
        pitr.add_argument("--target-xid", help="PostgreSQL: recover to this transaction id")
        pitr.add_argument("--target-name", help="PostgreSQL: recover to this restore point (pg_create_restore_point)")
        pitr.add_argument("--target-inclusive", action=BooleanOptionalAction, default=True,
                          help="stop just after (default) or just before the target")
        pitr.add_argument("--target-timeline", default="latest", help="PostgreSQL: latest (default), current or N")
        pitr.add_argument("--stop-position", metavar="FILE:POS", help="MySQL: replay binlogs up to this position")
        pitr.add_argument("--stop-gtid", help="MySQL: replay binlogs up to (not including) this GTID")
        pitr.add_argument("--data-directory", help="PostgreSQL: the new data directory to create")
        pitr.add_argument("--start", action="store_true",
                          help="PostgreSQL: start the recovered server and wait until it reaches the target")
        pitr.add_argument("--port", type=int, help="PostgreSQL: the port the recovered server listens on")
        pitr.add_argument("--pause", action="store_true",
                          help="PostgreSQL: pause at the target instead of promoting (inspect, then promote)")

    def handle(self, *args, **opts):
        recovery = [opts[name] for name in ("pitr_target", "target_lsn", "target_xid", "target_name",
                                            "stop_position", "stop_gtid")]
        if any(recovery):
            return self._pitr(opts)
        if not opts["backup_id"]:
            raise UsageError("say which backup to restore: --backup-id ID")
        backup = get_backup(opts["backup_id"])
        options = RestoreOptions(clean=opts["clean"], tables=tuple(opts["table"]), with_globals=opts["with_globals"],
                                 parallel=opts["parallel"])
        request = create_restore(backup, opts["target_database"] or "", opts["download_only"],
                                 opts["output_dir"] or "", cli_source(), cli_source(), options)
        if opts["enqueue"]:
            job_id = jobs.enqueue_restore(request)
            self._emit(opts, {"restore_id": request.pk, "job_id": job_id, "status": "pending"},
                       f"restore {request.pk} of {backup.id} queued as job {job_id}")
            return
        request = self._run(request, opts)
        data = {"restore_id": request.pk, "backup_id": backup.id, "status": request.status,
                "duration_seconds": request.duration_seconds, **request.result}
        text = f"restored {backup.id} to {request.result['location']}"
        counts = request.result.get("row_counts")
        if counts:
            text += f"\n  row counts match the backup's manifest for {counts['compared']} table(s)"
            if counts["skipped"]:
                text += f"; {len(counts['skipped'])} estimated or approximate count(s) not compared"
        self._emit(opts, data, text)

    def _run(self, request, opts):
        with progress_bar(f"restore {request.backup_id}") as on_progress:
            return run_restore(request.pk, opts["encryption_password_file"], opts["key_file"], on_progress)

    def _pitr(self, opts) -> None:
        backup = get_backup(opts["backup_id"]) if opts["backup_id"] else None
        if backup is None and not opts["target"]:
            raise UsageError("say which server to recover: --target NAME (or --backup-id ID)")
        target = backup.target if backup else get_target(opts["target"])
        recovery = recovery_target(
            opts["pitr_target"], lsn=opts["target_lsn"], xid=opts["target_xid"], name=opts["target_name"],
            stop_position=opts["stop_position"], stop_gtid=opts["stop_gtid"], inclusive=opts["target_inclusive"],
            timeline=opts["target_timeline"], action="pause" if opts["pause"] else "promote")
        request = create_pitr_restore(
            target, recovery, destination(opts["data_directory"], start=opts["start"], port=opts["port"],
                                          database=opts["target_database"]),
            backup, cli_source(), cli_source())
        if opts["enqueue"]:
            job_id = jobs.enqueue_restore(request)
            self._emit(opts, {"restore_id": request.pk, "job_id": job_id, "status": "pending"},
                       f"recovery {request.pk} from {request.backup_id} queued as job {job_id}")
            return
        request = self._run(request, opts)
        data = {"restore_id": request.pk, "backup_id": request.backup_id, "status": request.status,
                "recovery_target": recovery.describe(), "duration_seconds": request.duration_seconds,
                **request.result}
        lines = [f"recovered {target.name} from {request.backup_id} to {recovery.describe()} "
                 f"into {request.result['location']}"]
        lines += [f"  {line}" for line in request.result.get("summary", [])]
        self._emit(opts, data, "\n".join(lines))

    def _emit(self, opts, data: dict, text: str) -> None:
        self.stdout.write(json.dumps(data, indent=2) if opts["output_format"] == "json" else text)
