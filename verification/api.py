"""JSON API for verification runs: start one from a backup, read or cancel one."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from backups.services.catalog import get_backup
from core.api import ERRORS, MessageSerializer, cancel_response
from core.web import request_source
from verification import jobs
from verification.models import VerificationRun
from verification.serializers import VerificationAcceptedSerializer, VerificationSerializer
from verification.services import create_verification


class VerificationViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """A verification's status, checks and progress (start one with POST /api/backups/<id>/verify/)."""

    serializer_class = VerificationSerializer
    queryset = VerificationRun.objects.all()

    @extend_schema(request=None, responses={200: MessageSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a pending or running verification."""
        return cancel_response(self.get_object(), request)


class BackupVerifyView(APIView):
    """POST /api/backups/<id>/verify/."""

    @extend_schema(request=None, responses={202: VerificationAcceptedSerializer, **ERRORS})
    def post(self, request, id):
        """Queue a verification that reads the backup back whole."""
        run = create_verification(get_backup(id), request.user.username, request_source(request))
        job_id = jobs.enqueue_verification(run)
        return Response({"verification_id": run.pk, "job_id": job_id}, status=status.HTTP_202_ACCEPTED)
