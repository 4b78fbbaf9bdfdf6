"""JSON API for a target's WAL/binlog archive."""

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from archiving.services.windows import archive_summary
from backups.models import DatabaseTarget
from core.api import ERRORS


class TargetArchiveView(APIView):
    """GET /api/targets/<name>/archive/."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **ERRORS})
    def get(self, request, name):
        """The target's WAL/binlog archive: newest file, lag, archiver status, gaps and recoverable windows."""
        return Response(archive_summary(get_object_or_404(DatabaseTarget, name=name)))
