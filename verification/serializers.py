"""The API's JSON shapes of verification runs."""

from rest_framework import serializers

from core.api import PROGRESS_FIELDS
from verification.models import VerificationRun


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


class VerificationAcceptedSerializer(serializers.Serializer):
    """The answer to POST /api/backups/<id>/verify/."""

    verification_id = serializers.IntegerField()
    job_id = serializers.CharField()
