"""Restore a backup into a new target, or download its plaintext dump."""

import json

from backups import jobs, services
from backups.engines import RestoreOptions
from backups.management.base import CovetCommand, progress_bar
from restores.services import create_restore, run_restore


class Command(CovetCommand):
    help = ("Restore a backup into a new database (for SQLite a new file), or with --download-only write the "
            "decrypted dump to --output-dir. Exit codes: 0 ok, 1 other, 2 usage or wrong key, 3 not found, "
            "4 damaged, 5 database tool, 6 storage.")

    def add_arguments(self, parser):
        parser.add_argument("--backup-id", required=True)
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

    def handle(self, *args, **opts):
        backup = services.get_backup(opts["backup_id"])
        options = RestoreOptions(clean=opts["clean"], tables=tuple(opts["table"]), with_globals=opts["with_globals"],
                                 parallel=opts["parallel"])
        request = create_restore(backup, opts["target_database"] or "", opts["download_only"],
                                 opts["output_dir"] or "", services.cli_source(), services.cli_source(), options)
        if opts["enqueue"]:
            job_id = jobs.enqueue_restore(request)
            self._emit(opts, {"restore_id": request.pk, "job_id": job_id, "status": "pending"},
                       f"restore {request.pk} of {backup.id} queued as job {job_id}")
            return
        with progress_bar(f"restore {backup.id}") as on_progress:
            request = run_restore(request.pk, opts["encryption_password_file"], opts["key_file"], on_progress)
        data = {"restore_id": request.pk, "backup_id": backup.id, "status": request.status,
                "duration_seconds": request.duration_seconds, **request.result}
        text = f"restored {backup.id} to {request.result['location']}"
        counts = request.result.get("row_counts")
        if counts:
            text += f"\n  row counts match the backup's manifest for {counts['compared']} table(s)"
            if counts["skipped"]:
                text += f"; {len(counts['skipped'])} estimated or approximate count(s) not compared"
        self._emit(opts, data, text)

    def _emit(self, opts, data: dict, text: str) -> None:
        self.stdout.write(json.dumps(data, indent=2) if opts["output_format"] == "json" else text)
