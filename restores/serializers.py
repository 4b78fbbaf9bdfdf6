"""The API's JSON shapes of restores and point-in-time recoveries."""

from rest_framework import serializers

from core.api import PROGRESS_FIELDS
from covet.engines import RestoreOptions
from restores.services import pitr
from restores.models import RestoreRequest


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
        """Return the arguments of restores.services.pitr.recovery_target."""
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
