"""Back up one database: dump, compress, encrypt and store it, in this process or a worker."""

import json

from backups import jobs
from covet.errors import UsageError
from core.commands import CovetCommand, progress_bar
from backups.models import Backup
from covet.engines import ENGINES
from covet.pipeline import CIPHERS, CODECS
from backups.services.catalog import backup_summary, get_policy
from backups.services.runs import BackupRequest, create_backup, parse_tags, policy_request, run_backup
from backups.services.storages import get_storage
from backups.services.targets import adhoc_target, get_target
from core.audit import cli_source


def prometheus_lines(backup: Backup) -> str:
    """Return the backup's figures in Prometheus text exposition format."""
    labels = f'target="{backup.target.name}",database_type="{backup.target.engine}",status="{backup.status}"'
    lines = [
        "# HELP covet_backup_source_bytes Bytes read from the database.",
        "# TYPE covet_backup_source_bytes gauge",
        f"covet_backup_source_bytes{{{labels}}} {backup.source_bytes or 0}",
        "# HELP covet_backup_stored_bytes Bytes written to storage.",
        "# TYPE covet_backup_stored_bytes gauge",
        f"covet_backup_stored_bytes{{{labels}}} {backup.stored_bytes or 0}",
        "# HELP covet_backup_duration_seconds Wall time of the backup.",
        "# TYPE covet_backup_duration_seconds gauge",
        f"covet_backup_duration_seconds{{{labels}}} {backup.duration_seconds or 0}",
        "# HELP covet_backup_success Whether the backup completed (1) or not (0).",
        "# TYPE covet_backup_success gauge",
        f"covet_backup_success{{{labels}}} {1 if backup.status == 'completed' else 0}",
    ]
    return "\n".join(lines) + "\n"


class Command(CovetCommand):
    help = "Back up a database. Exit codes: 0 ok, 1 other, 2 usage, 3 not found, 5 database tool, 6 storage."

    def add_arguments(self, parser):
        where = parser.add_argument_group("what to back up")
        where.add_argument("--target", help="a registered target (see 'manage.py target list')")
        where.add_argument("--policy", help="back up as this policy says (target, storages, codec, cipher, key, "
                                            "retention, tier, tags); flags given too override it")
        where.add_argument("--database", choices=list(ENGINES), help="engine of an ad-hoc target")
        where.add_argument("--name", help="database name; for SQLite the database file")
        where.add_argument("--host", default="")
        where.add_argument("--port", type=int)
        where.add_argument("--user", default="")
        where.add_argument("--password-file", help="file holding the database password (never on the command line)")
        where.add_argument("--type", choices=["logical", "base"], default="logical",
                           help="logical (a dump of one database) or base (PostgreSQL: the whole server with "
                                "pg_basebackup, the starting point of point-in-time recovery)")
        how = parser.add_argument_group("how to store it")
        how.add_argument("--compress", choices=CODECS, help="default zstd")
        how.add_argument("--compress-level", type=int)
        how.add_argument("--encrypt", choices=CIPHERS, help="default aes-256-gcm")
        how.add_argument("--encryption-password-file", help="passphrase file for the key-encryption key")
        how.add_argument("--key-file", help="key file (mode 0600) for the key-encryption key")
        how.add_argument("--storage", help="storage name (default: the default storage)")
        how.add_argument("--copy-to", metavar="STORAGE", help="also copy the backup to this second storage")
        how.add_argument("--storage-tier", metavar="TIER",
                         help="S3 storage class (STANDARD, STANDARD_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE) or Azure "
                              "access tier (Hot, Cool, Cold, Archive) of this backup; default: the storage's")
        how.add_argument("--parallel", type=int, default=1,
                         help="parallel dump jobs (PostgreSQL directory format; helps databases with several large tables)")
        how.add_argument("--retention-days", type=int)
        how.add_argument("--tags", help="k=v,k2=v2")
        parser.add_argument("--output-format", choices=["text", "json", "prometheus"], default="text")
        parser.add_argument("--enqueue", action="store_true", help="hand the work to a worker; print the job id")

    def handle(self, *args, **opts):
        given = dict(
            database=opts["name"],
            storage=get_storage(opts["storage"]) if opts["storage"] else None,
            copy_to=get_storage(opts["copy_to"]) if opts["copy_to"] else None,
            compression=opts["compress"],
            compression_level=opts["compress_level"],
            cipher=opts["encrypt"],
            passphrase_file=opts["encryption_password_file"],
            key_file=opts["key_file"],
            retention_days=opts["retention_days"],
            storage_tier=opts["storage_tier"],
            tags=parse_tags(opts["tags"]) if opts["tags"] else None,
            initiated_by=cli_source(),
            source=cli_source(),
        )
        if opts["policy"]:
            if opts["target"] or opts["database"]:
                raise UsageError("a policy names its target: give --policy or --target/--database, not both")
            request = policy_request(get_policy(opts["policy"]), **given)
        else:
            defaults = {"storage": get_storage(None), "compression": "zstd", "cipher": "aes-256-gcm"}
            request = BackupRequest(target=self._target(opts), **{
                **defaults, **{key: value for key, value in given.items() if value is not None}})
        request.parallel, request.backup_type = opts["parallel"], opts["type"]
        backup = create_backup(request)
        if opts["enqueue"]:
            job_id = jobs.enqueue_backup(backup)
            self._emit(opts["output_format"], {"backup_id": backup.id, "job_id": job_id, "status": "pending"},
                       f"backup {backup.id} queued as job {job_id}")
            return
        with progress_bar(f"backup {backup.id}") as on_progress:
            try:
                backup = run_backup(backup.id, on_progress)
            finally:
                backup.refresh_from_db()
                self._report(backup, opts["output_format"])

    def _target(self, opts):
        if opts["target"]:
            if opts["database"]:
                raise UsageError("give either --target or --database, not both")
            return get_target(opts["target"])
        if not opts["database"] or not opts["name"]:
            raise UsageError("say what to back up: --target NAME, or --database KIND --name NAME")
        return adhoc_target(opts["database"], opts["name"], opts["host"], opts["port"], opts["user"],
                                     opts["password_file"])

    def _report(self, backup: Backup, fmt: str) -> None:
        summary = backup_summary(backup)
        if fmt == "prometheus":
            self.stdout.write(prometheus_lines(backup), ending="")
            return
        if backup.status != "completed" and fmt == "text":
            return  # the error line on stderr says it all
        text = (f"backup {backup.id} {backup.status}: {backup.source_bytes} bytes -> {backup.stored_bytes} stored "
                f"({backup.compression}, {backup.cipher}) in {summary['duration_seconds']:.1f}s\n"
                f"  location {summary['storage_location']}\n  sha256   {backup.sha256}")
        if backup.backup_type == "base":
            meta = backup.engine_meta
            text += (f"\n  wal      {meta.get('start_lsn')} to {meta.get('end_lsn')} on timeline {meta.get('timeline')}"
                     + ("" if backup.usable else " (not usable for recovery until that WAL is archived)"))
        self._emit(fmt, summary, text)

    def _emit(self, fmt: str, data: dict, text: str) -> None:
        self.stdout.write(json.dumps(data, indent=2) if fmt == "json" else text)
