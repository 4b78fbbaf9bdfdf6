"""Every API error has one shape: {"error": "..."} with a 4xx status chosen by category."""

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from covet.errors import (BusyError, CovetError, DamagedError, NotFoundError, QueueUnavailableError,
                            StorageError, ToolError)

STATUS_BY_ERROR = [
    (NotFoundError, 404),
    (BusyError, 409),
    (DamagedError, 422),
    (ToolError, 502),
    (StorageError, 503),
    (QueueUnavailableError, 503),
    (CovetError, 400),
]


def status_for(exc: CovetError) -> int:
    """Return the HTTP status for a CovetError."""
    return next(code for cls, code in STATUS_BY_ERROR if isinstance(exc, cls))


def exception_handler(exc, context):
    """Turn CovetErrors and DRF's own errors into {"error": message} responses."""
    if isinstance(exc, CovetError):
        return Response({"error": str(exc)}, status=status_for(exc))
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"error": str(response.data["detail"])}
    elif response is not None:
        response.data = {"error": "invalid request", "fields": response.data}
    return response
