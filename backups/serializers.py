"""The API's JSON shapes of backups (the fields of backup_summary and more) and targets.

Nothing secret is ever rendered: a target's password is write-only and shows
as ``has_password``; a backup's wrapped data keys (``key_record``) are left
out, its key source (a path reference) is shown.
"""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.api import PROGRESS_FIELDS

from backups.models import CIPHER_CHOICES, CODEC_CHOICES, Backup, BackupCopy, DatabaseTarget, Storage
from restores.models import RestoreRequest
from verification.models import VerificationRun
from backups.services.runs import BackupRequest
from backups.services.storages import storage_backend


class VerificationSummarySerializer(serializers.ModelSerializer):
    """One verification run as listed inside a backup."""

    class Meta:
        model = VerificationRun
        fields = ["id", "status", "requested_by", "created_at", "started_at", "finished_at", "error"]
        read_only_fields = fields


class RestoreSummarySerializer(serializers.ModelSerializer):
    """One restore as listed inside a backup."""

    class Meta:
        model = RestoreRequest
        fields = ["id", "status", "target_database", "download_only", "requested_by", "created_at",
                  "finished_at", "error"]
        read_only_fields = fields


class BackupCopySerializer(serializers.ModelSerializer):
    """A further copy of a backup on another storage, and its state."""

    storage = serializers.CharField(source="storage.name", read_only=True)

    class Meta:
        model = BackupCopy
        fields = ["storage", "state", "error"]
        read_only_fields = fields


class BackupSerializer(serializers.ModelSerializer):
    """A backup: the fields backup_summary gives scripts, plus metadata, progress and its jobs."""

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
        return storage_backend(backup.storage).describe(backup.storage_key)


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

    def backup_request(self, initiated_by: str, source: str) -> BackupRequest:
        """Return the service request for the validated data."""
        return BackupRequest(initiated_by=initiated_by, source=source, **self.validated_data)


class BackupAcceptedSerializer(serializers.Serializer):
    """The answer to POST /api/backups/."""

    backup = BackupSerializer()
    job_id = serializers.CharField()


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
