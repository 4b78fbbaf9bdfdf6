"""JSON API for restores: start one from a backup, recover a target to a point in time, read or cancel one."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from backups.models import DatabaseTarget
from backups.services.catalog import get_backup
from core.api import ERRORS, MessageSerializer, cancel_response
from core.web import request_source
from restores import jobs
from restores.services import pitr
from restores.models import RestoreRequest
from restores.serializers import (RecoverSerializer, RestoreAcceptedSerializer, RestoreCreateSerializer,
                                  RestoreSerializer)
from restores.services.restore import create_restore


def _accepted(restore, job_id: str) -> Response:
    body = {"restore_id": restore.pk, "job_id": job_id, "restore": RestoreSerializer(restore).data}
    return Response(body, status=status.HTTP_202_ACCEPTED)


class RestoreViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """A restore's status, progress and result (start one with POST /api/backups/<id>/restore/)."""

    serializer_class = RestoreSerializer
    queryset = RestoreRequest.objects.all()

    @extend_schema(request=None, responses={200: MessageSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a pending or running restore."""
        return cancel_response(self.get_object(), request)


class BackupRestoreView(APIView):
    """POST /api/backups/<id>/restore/."""

    @extend_schema(request=RestoreCreateSerializer, responses={202: RestoreAcceptedSerializer, **ERRORS})
    def post(self, request, id):
        """Queue a restore of the backup into a new database (or new SQLite file)."""
        backup = get_backup(id)
        serializer = RestoreCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        restore = create_restore(backup, serializer.validated_data["target_database"],
                                 requested_by=request.user.username, source=request_source(request),
                                 options=serializer.restore_options())
        return _accepted(restore, jobs.enqueue_restore(restore))


class TargetRecoverView(APIView):
    """POST /api/targets/<name>/recover/."""

    @extend_schema(request=RecoverSerializer, responses={202: RestoreAcceptedSerializer, **ERRORS})
    def post(self, request, name):
        """Queue a point-in-time recovery; it is checked (window, gaps, destination) before it is queued."""
        serializer = RecoverSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        target = get_object_or_404(DatabaseTarget, name=name)
        backup_id = serializer.validated_data.get("backup_id")
        restore = pitr.create_pitr_restore(
            target, pitr.recovery_target(**serializer.recovery_kwargs()), serializer.destination(),
            get_backup(backup_id) if backup_id else None, request.user.username, request_source(request))
        return _accepted(restore, jobs.enqueue_restore(restore))
