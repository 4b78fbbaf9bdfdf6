"""The API's JSON shapes: backups (the fields of services.backup_summary and more), targets, jobs.

Nothing secret is ever rendered: a target's password is write-only and shows
as ``has_password``; a backup's wrapped data keys (``key_record``) are left
out, its key source (a path reference) is shown.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from backups import services
from covet.engines import RestoreOptions
from backups.models import CIPHER_CHOICES, CODEC_CHOICES, Backup, BackupCopy, DatabaseTarget, Storage
from restores import pitr
from restores.models import RestoreRequest
from verification.models import VerificationRun

PROGRESS_FIELDS = ["bytes_done", "bytes_expected", "eta_seconds", "percent_done", "heartbeat_at",
                   "cancel_requested", "job_id"]


class VerificationSummarySerializer(serializers.ModelSerializer):
    """One verification run as listed inside a backup."""

    class Meta:
        model = VerificationRun
        fields = ["id", "status", "requested_by", "created_at", "started_at", "finished_at", "error"]
        read_only_fields = fields


class VerificationSerializer(serializers.ModelSerializer):
    """A verification run with its checks and live progress."""

    backup_id = serializers.CharField(read_only=True)
    percent_done = serializers.FloatField(read_only=True, allow_null=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = VerificationRun
        fields = ["id", "backup_id", "status", "requested_by", "checks", "created_at", "started_at",
                  "finished_at", "duration_seconds", "error", *PROGRESS_FIELDS]
        read_only_fields = fields


class RestoreSummarySerializer(serializers.ModelSerializer):
    """One restore as listed inside a backup."""

    class Meta:
        model = RestoreRequest
        fields = ["id", "status", "target_database", "download_only", "requested_by", "created_at",
                  "finished_at", "error"]
        read_only_fields = fields


class RestoreSerializer(serializers.ModelSerializer):
    """A restore request with its result and live progress."""

    backup_id = serializers.CharField(read_only=True, allow_null=True, help_text="Null once the backup was deleted")
    percent_done = serializers.FloatField(read_only=True, allow_null=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = RestoreRequest
        fields = ["id", "backup_id", "status", "target_database", "download_only", "output_path", "options", "pitr",
                  "requested_by",
                  "result", "created_at", "started_at", "finished_at", "duration_seconds", "error",
                  *PROGRESS_FIELDS]
        read_only_fields = fields


class BackupCopySerializer(serializers.ModelSerializer):
    """A further copy of a backup on another storage, and its state."""

    storage = serializers.CharField(source="storage.name", read_only=True)

    class Meta:
        model = BackupCopy
        fields = ["storage", "state", "error"]
        read_only_fields = fields


class BackupSerializer(serializers.ModelSerializer):
    """A backup: the fields services.backup_summary gives scripts, plus metadata, progress and its jobs."""

    backup_id = serializers.CharField(source="id", read_only=True)
    database_type = serializers.CharField(source="target.engine", read_only=True)
    target = serializers.CharField(source="target.name", read_only=True)
    storage = serializers.CharField(source="storage.name", read_only=True)
    policy = serializers.CharField(source="policy.name", read_only=True, allow_null=True)
    storage_location = serializers.SerializerMethodField()
    compression_ratio = serializers.FloatField(read_only=True, allow_null=True)
    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)
    percent_done = serializers.FloatField(read_only=True, allow_null=True)
    verifications = VerificationSummarySerializer(many=True, read_only=True)
    restores = RestoreSummarySerializer(many=True, read_only=True)
    copies = BackupCopySerializer(many=True, read_only=True)

    class Meta:
        model = Backup
        fields = ["backup_id", "status", "database_type", "database_name", "target", "backup_type", "usable", "policy",
                  "storage_tier",
                  "source_bytes", "stored_bytes", "compression", "compression_level", "compression_ratio",
                  "cipher", "key_id", "key_source", "sha256", "storage", "storage_location", "storage_key",
                  "created_at", "started_at", "finished_at", "duration_seconds", "expires_at", "initiated_by",
                  "tags", "engine_meta", "manifest", "parallel", "copies", "error", *PROGRESS_FIELDS,
                  "verifications", "restores"]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField())
    def get_storage_location(self, backup: Backup) -> str:
        """Where the object lives, in the storage's own words (a path or a URL)."""
        if not backup.storage_key:
            return ""
        return services.storage_backend(backup.storage).describe(backup.storage_key)


class BackupCreateSerializer(serializers.Serializer):
    """POST /api/backups/: what to back up and how; unset fields take the service's defaults."""

    target = serializers.SlugRelatedField(slug_field="name", queryset=DatabaseTarget.objects.all())
    database = serializers.CharField(required=False, allow_blank=True, default="",
                                     help_text="Empty: the target's own database")
    compression = serializers.ChoiceField(choices=CODEC_CHOICES, default="zstd")
    compression_level = serializers.IntegerField(required=False, allow_null=True, default=None)
    cipher = serializers.ChoiceField(choices=CIPHER_CHOICES, default="aes-256-gcm",
                                     help_text="Encrypted with the site's default key unless none")
    storage = serializers.SlugRelatedField(slug_field="name", queryset=Storage.objects.all(), required=False,
                                           allow_null=True, default=None, help_text="Empty: the default storage")
    retention_days = serializers.IntegerField(required=False, allow_null=True, default=None, min_value=1)
    parallel = serializers.IntegerField(required=False, default=1, min_value=1, max_value=64,
                                        help_text="Parallel dump jobs (PostgreSQL directory format)")
    tags = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)

    def backup_request(self, initiated_by: str, source: str) -> services.BackupRequest:
        """Return the service request for the validated data."""
        return services.BackupRequest(initiated_by=initiated_by, source=source, **self.validated_data)


class BackupAcceptedSerializer(serializers.Serializer):
    """The answer to POST /api/backups/."""

    backup = BackupSerializer()
    job_id = serializers.CharField()


class RestoreCreateSerializer(serializers.Serializer):
    """POST /api/backups/<id>/restore/."""

    target_database = serializers.CharField(
        max_length=1024, help_text="A new database name, or for SQLite a new file path; existing ones need clean")
    clean = serializers.BooleanField(
        default=False, help_text="Replace an existing database, only after the whole backup was authenticated")
    tables = serializers.ListField(child=serializers.CharField(max_length=512), required=False, default=list,
                                   help_text='Restore only these tables ("schema.name")')
    with_globals = serializers.BooleanField(
        default=False, help_text="Also restore roles (PostgreSQL) or users and grants (MySQL)")
    parallel = serializers.IntegerField(default=1, min_value=1, max_value=64, help_text="Parallel restore jobs")

    def restore_options(self) -> RestoreOptions:
        """Return the engine restore options for the validated data."""
        data = self.validated_data
        return RestoreOptions(clean=data["clean"], tables=tuple(data["tables"]), with_globals=data["with_globals"],
                              parallel=data["parallel"])


class RecoverSerializer(serializers.Serializer):
    """POST /api/targets/<name>/recover/: point-in-time recovery of a target's server."""

    pitr_target = serializers.CharField(required=False, help_text="A time (UTC unless an offset is given) or latest")
    target_lsn = serializers.CharField(required=False, help_text="PostgreSQL: a WAL position such as 0/16B3748")
    target_xid = serializers.CharField(required=False, help_text="PostgreSQL: a transaction id")
    target_name = serializers.CharField(required=False, help_text="PostgreSQL: a restore point name")
    stop_position = serializers.CharField(required=False, help_text="MySQL: FILE:POS")
    stop_gtid = serializers.CharField(required=False, help_text="MySQL: a GTID")
    inclusive = serializers.BooleanField(default=True, help_text="Stop just after (true) or before the target")
    timeline = serializers.CharField(default="latest", help_text="PostgreSQL: latest, current or a number")
    pause = serializers.BooleanField(default=False, help_text="PostgreSQL: pause at the target instead of promoting")
    backup_id = serializers.CharField(required=False, help_text="Default: the newest suitable backup")
    data_directory = serializers.CharField(required=False, help_text="PostgreSQL: a new data directory")
    host = serializers.CharField(required=False, help_text="PostgreSQL: the host that will hold the data directory")
    start = serializers.BooleanField(default=False, help_text="PostgreSQL: start the server and wait for the target")
    port = serializers.IntegerField(required=False, min_value=1, max_value=65535)
    target_database = serializers.CharField(required=False, help_text="MySQL: a new schema")

    def recovery_kwargs(self) -> dict:
        """Return the arguments of restores.pitr.recovery_target."""
        data = self.validated_data
        return {"pitr_target": data.get("pitr_target"), "lsn": data.get("target_lsn"), "xid": data.get("target_xid"),
                "name": data.get("target_name"), "stop_position": data.get("stop_position"),
                "stop_gtid": data.get("stop_gtid"), "inclusive": data["inclusive"], "timeline": data["timeline"],
                "action": "pause" if data["pause"] else "promote"}

    def destination(self) -> dict:
        """Return the engine's destination for the validated data."""
        data = self.validated_data
        return pitr.destination(data.get("data_directory"), data.get("host"), data["start"], data.get("port"),
                                data.get("target_database"))


class RestoreAcceptedSerializer(serializers.Serializer):
    """The answer to POST /api/backups/<id>/restore/."""

    restore_id = serializers.IntegerField()
    job_id = serializers.CharField()
    restore = RestoreSerializer()


class VerificationAcceptedSerializer(serializers.Serializer):
    """The answer to POST /api/backups/<id>/verify/."""

    verification_id = serializers.IntegerField()
    job_id = serializers.CharField()


class MessageSerializer(serializers.Serializer):
    """A plain answer such as the result of a cancel."""

    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    """Every error: {"error": ...}, with "fields" for validation errors."""

    error = serializers.CharField()
    fields = serializers.DictField(required=False)


class TargetSerializer(serializers.ModelSerializer):
    """A database target; the password is write-only and stored in a 0600 file, never returned."""

    password = serializers.CharField(write_only=True, required=False, allow_blank=True, trim_whitespace=False,
                                     style={"input_type": "password"},
                                     help_text="Written to a 0600 file on the server; only its path is kept")
    has_password = serializers.SerializerMethodField()

    class Meta:
        model = DatabaseTarget
        fields = ["name", "engine", "host", "port", "user", "database", "password", "has_password", "os_user",
                  "pitr_enabled", "running_backup", "created_at"]
        read_only_fields = ["pitr_enabled", "running_backup", "created_at"]

    def get_has_password(self, target: DatabaseTarget) -> bool:
        """Whether a password reference is set."""
        return bool(target.password_ref)
