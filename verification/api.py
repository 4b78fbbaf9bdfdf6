"""JSON API for verification runs: read one, cancel one. Runs are started from a backup."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action

from backups.api import ERRORS, cancel_response
from backups.serializers import MessageSerializer, VerificationSerializer
from verification.models import VerificationRun


class VerificationViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """A verification's status, checks and progress (start one with POST /api/backups/<id>/verify/)."""

    serializer_class = VerificationSerializer
    queryset = VerificationRun.objects.all()

    @extend_schema(request=None, responses={200: MessageSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a pending or running verification."""
        return cancel_response(self.get_object(), request)
