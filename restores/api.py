"""JSON API for restore requests: read one, cancel one. Restores are started from a backup."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action

from backups.api import ERRORS, cancel_response
from backups.serializers import MessageSerializer, RestoreSerializer
from restores.models import RestoreRequest


class RestoreViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """A restore's status, progress and result (start one with POST /api/backups/<id>/restore/)."""

    serializer_class = RestoreSerializer
    queryset = RestoreRequest.objects.all()

    @extend_schema(request=None, responses={200: MessageSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a pending or running restore."""
        return cancel_response(self.get_object(), request)
