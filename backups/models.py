"""The backup catalog: targets, storages, policies, backups, archived logs, audit events.

Models carry data and small queries; multi-step work lives in services.py.
No secret is stored here: passwords and keys are referenced by file path or
environment variable name.
"""

import secrets

from django.db import models
from django.utils import timezone

from covet.engines import ENGINES
from covet.pipeline import CIPHERS, CODECS
from covet.registry import choices
from covet.storage import KINDS

ENGINE_CHOICES = choices(ENGINES)
CODEC_CHOICES = [(c, c) for c in CODECS]
CIPHER_CHOICES = [(c, c) for c in CIPHERS]


def new_backup_id(now=None) -> str:
    """Return a sortable, unique backup id such as backup_20261124_143027_a8f3d9 (UTC)."""
    now = now or timezone.now()
    return f"backup_{now:%Y%m%d_%H%M%S}_{secrets.token_hex(3)}"


class JobStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)


class TrackedJob(models.Model):
    """Status, progress, heartbeat and cancellation shared by every kind of job row."""

    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    job_id = models.CharField(max_length=64, blank=True, help_text="RQ job id when run by a worker")
    bytes_done = models.BigIntegerField(default=0)
    bytes_expected = models.BigIntegerField(null=True, blank=True)
    eta_seconds = models.FloatField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)

    class Meta:
        abstract = True

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def percent_done(self) -> float | None:
        if self.bytes_expected:
            return min(100.0, 100.0 * self.bytes_done / self.bytes_expected)
        return None


class DatabaseTarget(models.Model):
    """A database server (or, for SQLite, a database file) that Covet backs up."""

    name = models.SlugField(max_length=100, unique=True)
    engine = models.CharField(max_length=16, choices=ENGINE_CHOICES)
    host = models.CharField(max_length=255, blank=True)
    port = models.PositiveIntegerField(null=True, blank=True)
    user = models.CharField(max_length=128, blank=True)
    database = models.CharField(
        max_length=1024, blank=True, help_text="Database name for logical backups; for SQLite the file path"
    )
    password_ref = models.CharField(
        max_length=1024,
        blank=True,
        help_text="Where the password lives: file:/path or env:VARIABLE. Never the password itself.",
    )
    os_user = models.CharField(max_length=64, blank=True, help_text="OS user that owns the server's files")
    running_backup = models.CharField(
        max_length=64, blank=True, default="", help_text="Id of the backup holding this target's lock"
    )
    pitr_enabled = models.BooleanField(
        default=False, help_text="WAL/binlog archiving is on: make run supervises this target's shipper"
    )
    archive_storage = models.ForeignKey(
        "Storage", null=True, blank=True, on_delete=models.PROTECT, related_name="archiving_targets",
        help_text="Where WAL/binlogs go; empty: the default storage",
    )
    archive_key = models.JSONField(
        default=dict, blank=True,
        help_text="The archive's data key: {key_id, key_record (wrapped, no secret), key_source, cipher}",
    )
    archiver_status = models.JSONField(
        default=dict, blank=True,
        help_text="Written by the running shipper/archiver: heartbeat, backlog, last error",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Storage(models.Model):
    """Where backup objects live: a kind (local, s3, azure) and its non-secret settings."""

    KIND_CHOICES = choices(KINDS)

    name = models.SlugField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=KIND_CHOICES, default="local")
    config = models.JSONField(default=dict, blank=True, help_text='e.g. {"root": "/var/backups/covet"}')
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class BackupPolicy(models.Model):
    """How a target is backed up: where, compressed and encrypted how, kept how long."""

    name = models.SlugField(max_length=100, unique=True)
    target = models.ForeignKey(DatabaseTarget, on_delete=models.CASCADE, related_name="policies")
    database = models.CharField(max_length=1024, blank=True, help_text="Empty: the target's database")
    storage = models.ForeignKey(Storage, on_delete=models.PROTECT, related_name="policies")
    secondary_storage = models.ForeignKey(
        Storage, null=True, blank=True, on_delete=models.PROTECT, related_name="secondary_policies",
        help_text="A second storage every backup is copied to (3-2-1 rule)",
    )
    compression = models.CharField(max_length=16, choices=CODEC_CHOICES, default="zstd")
    compression_level = models.IntegerField(null=True, blank=True)
    cipher = models.CharField(max_length=32, choices=CIPHER_CHOICES, default="aes-256-gcm")
    key_source = models.JSONField(
        default=dict, blank=True, help_text='{"kind": "keyfile", "path": ...}; empty: the site default key'
    )
    retention_days = models.PositiveIntegerField(null=True, blank=True)
    storage_tier = models.CharField(
        max_length=32, blank=True,
        help_text="S3 storage class (STANDARD, STANDARD_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE) or Azure access "
                  "tier (Hot, Cool, Cold, Archive) of this policy's backups; empty: the storage's own setting",
    )
    tags = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "backup policies"

    def __str__(self) -> str:
        return self.name


class Backup(TrackedJob):
    """One backup: its catalog row, written completed only after object and sidecar are stored."""

    TYPE_CHOICES = [("logical", "Logical"), ("base", "Base (physical)")]

    id = models.CharField(max_length=64, primary_key=True, default=new_backup_id)
    target = models.ForeignKey(DatabaseTarget, on_delete=models.PROTECT, related_name="backups")
    policy = models.ForeignKey(BackupPolicy, null=True, blank=True, on_delete=models.SET_NULL)
    database_name = models.CharField(max_length=1024)
    backup_type = models.CharField(max_length=16, choices=TYPE_CHOICES, default="logical")
    source_bytes = models.BigIntegerField(null=True, blank=True)
    stored_bytes = models.BigIntegerField(null=True, blank=True)
    compression = models.CharField(max_length=16, choices=CODEC_CHOICES)
    compression_level = models.IntegerField(default=0)
    cipher = models.CharField(max_length=32, choices=CIPHER_CHOICES)
    key_id = models.CharField(max_length=64, blank=True, help_text="Id of this backup's data key")
    key_record = models.JSONField(default=dict, blank=True, help_text="Wrapped data key(s); no secret")
    key_source = models.JSONField(default=dict, blank=True, help_text="Which key-encryption key wrapped it")
    sha256 = models.CharField(max_length=64, blank=True, help_text="SHA-256 of the stored object")
    storage = models.ForeignKey(Storage, on_delete=models.PROTECT, related_name="backups")
    storage_key = models.CharField(max_length=1024, blank=True)
    storage_tier = models.CharField(max_length=32, blank=True, help_text="Storage class or access tier of the object")
    initiated_by = models.CharField(max_length=150, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    engine_meta = models.JSONField(default=dict, blank=True, help_text="Engine facts: versions, positions")
    manifest = models.JSONField(default=dict, blank=True, help_text="Row counts per table at the dump's snapshot")
    extras = models.JSONField(
        default=dict, blank=True, help_text="Small encrypted objects beside the dump (globals, grants): name -> key"
    )
    parallel = models.PositiveSmallIntegerField(default=1, help_text="Parallel dump jobs")
    usable = models.BooleanField(
        default=True, help_text="False for a base backup until every WAL segment from its start to its end is archived"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target", "status"])]

    def __str__(self) -> str:
        return self.id

    @property
    def engine(self) -> str:
        return self.target.engine

    @property
    def compression_ratio(self) -> float | None:
        if self.source_bytes and self.stored_bytes:
            return round(self.source_bytes / self.stored_bytes, 3)
        return None

    @property
    def sidecar_key(self) -> str:
        return self.storage_key.rsplit(".", 1)[0] + ".json" if self.storage_key else ""


class BackupCopy(models.Model):
    """A further copy of a backup's objects on another storage, and whether it is healthy."""

    class State(models.TextChoices):
        PENDING = "pending"
        OK = "ok"
        FAILED = "failed"
        MISSING = "missing"
        DAMAGED = "damaged"

    backup = models.ForeignKey(Backup, on_delete=models.CASCADE, related_name="copies")
    storage = models.ForeignKey(Storage, on_delete=models.PROTECT, related_name="copies")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    error = models.TextField(blank=True)
    copied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["backup", "storage"]
        constraints = [models.UniqueConstraint(fields=["backup", "storage"], name="one_copy_per_storage")]

    def __str__(self) -> str:
        return f"{self.backup_id} on {self.storage}"


class ArchivedLog(models.Model):
    """One archived WAL segment or binlog file of a target."""

    KIND_CHOICES = [("wal", "PostgreSQL WAL"), ("binlog", "MySQL binlog")]

    target = models.ForeignKey(DatabaseTarget, on_delete=models.PROTECT, related_name="archived_logs")
    kind = models.CharField(max_length=8, choices=KIND_CHOICES)
    name = models.CharField(max_length=255)
    timeline = models.PositiveIntegerField(null=True, blank=True)
    storage = models.ForeignKey(Storage, on_delete=models.PROTECT)
    storage_key = models.CharField(max_length=1024)
    size = models.BigIntegerField(default=0)
    stored_bytes = models.BigIntegerField(default=0)
    sha256 = models.CharField(max_length=64, help_text="SHA-256 of the stored object")
    plaintext_sha256 = models.CharField(max_length=64, blank=True)
    key_id = models.CharField(max_length=64, blank=True, help_text="The target's archive data key, if encrypted")
    partial = models.BooleanField(default=False, help_text="A live binlog shipped before it completed")
    start_position = models.BigIntegerField(null=True, blank=True, help_text="Binlog: first event's position")
    end_position = models.BigIntegerField(null=True, blank=True, help_text="Binlog: position after the last event")
    first_event_at = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    gtid_range = models.CharField(max_length=1024, blank=True)
    archived_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["target", "kind", "timeline", "name"]
        constraints = [
            models.UniqueConstraint(fields=["target", "kind", "timeline", "name"], name="unique_archived_log")
        ]

    def __str__(self) -> str:
        return f"{self.target}:{self.kind}:{self.name}"


class AuditEvent(models.Model):
    """Who did what, when, from where, with which result. Never holds a secret."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=255, blank=True, db_index=True)
    source = models.CharField(max_length=255, blank=True, help_text="IP address, or cli:user@host")
    result = models.CharField(max_length=16, default="ok")
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_id} {self.result}"
