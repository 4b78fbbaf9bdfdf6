"""Verify backups by reading them back whole: checksum, decrypt, decompress."""

import json

from verification import jobs
from covet.errors import CovetError, DamagedError, UsageError
from core.commands import CovetCommand, progress_bar
from backups.models import Backup, JobStatus
from verification.services import create_verification, run_verification
from backups.services.catalog import get_backup
from core.audit import cli_source


class Command(CovetCommand):
    help = ("Verify one backup or all completed ones. Exit codes: 0 all verified, 2 usage or wrong key, "
            "3 not found, 4 a backup is damaged, 6 storage.")

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--backup-id")
        which.add_argument("--all", action="store_true", help="every completed backup")
        parser.add_argument("--encryption-password-file")
        parser.add_argument("--key-file")
        parser.add_argument("--output-format", choices=["text", "json"], default="text")
        parser.add_argument("--enqueue", action="store_true", help="hand the work to a worker; print the job ids")

    def handle(self, *args, **opts):
        if opts["backup_id"]:
            backups = [get_backup(opts["backup_id"])]
        else:
            backups = list(Backup.objects.filter(status=JobStatus.COMPLETED).select_related("target", "storage"))
            if not backups:
                raise UsageError("there are no completed backups to verify")
        results, failures = [], []
        for backup in backups:
            run = create_verification(backup, cli_source(), cli_source())
            if opts["enqueue"]:
                results.append({"backup_id": backup.id, "verification_id": run.pk, "job_id": jobs.enqueue_verification(run)})
                continue
            try:
                with progress_bar(f"verify {backup.id}") as on_progress:
                    run = run_verification(run.pk, opts["encryption_password_file"], opts["key_file"], on_progress)
            except CovetError as exc:
                if not isinstance(exc, DamagedError) and len(backups) == 1:
                    raise
                failures.append(exc)
                run.refresh_from_db()
            results.append({"backup_id": backup.id, "verification_id": run.pk, "status": run.status,
                            "error": run.error, "checks": run.checks})
        self._emit(opts["output_format"], results)
        if failures:
            worst = next((f for f in failures if isinstance(f, DamagedError)), failures[0])
            names = ", ".join(r["backup_id"] for r in results if r.get("status") == JobStatus.FAILED)
            raise type(worst)(f"{len(failures)} of {len(backups)} backup(s) failed verification: {names}"
                              if len(backups) > 1 else str(worst))

    def _emit(self, fmt: str, results: list) -> None:
        if fmt == "json":
            self.stdout.write(json.dumps(results, indent=2))
            return
        for result in results:
            if "job_id" in result:
                self.stdout.write(f"{result['backup_id']}: queued as job {result['job_id']}")
            elif result["status"] == JobStatus.COMPLETED:
                self.stdout.write(f"{result['backup_id']}: ok (checksum, decrypt, decompress)")
            else:
                self.stdout.write(f"{result['backup_id']}: FAILED: {result['error']}")
