"""What every app's JSON API shares: the error and message shapes, job progress fields, cancelling a job."""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.response import Response

from core.cancel import request_cancel
from core.web import request_source

PROGRESS_FIELDS = ["bytes_done", "bytes_expected", "eta_seconds", "percent_done", "heartbeat_at",
                   "cancel_requested", "job_id"]


class MessageSerializer(serializers.Serializer):
    """A plain answer such as the result of a cancel."""

    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    """Every error: {"error": ...}, with "fields" for validation errors."""

    error = serializers.CharField()
    fields = serializers.DictField(required=False)


ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 404, 409)}


def cancel_response(row, request) -> Response:
    """Ask a job row to stop and answer with what happened."""
    message = request_cancel(row, request.user.username, request_source(request))
    return Response({"message": message})
