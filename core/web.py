"""What every app's pages share: the client address for audit events, and errors as flash messages."""

import contextlib
from typing import Iterator

from django.contrib import messages
from django.http import HttpRequest

from covet.errors import CovetError


def request_source(request: HttpRequest) -> str:
    """Return the client address recorded in audit events."""
    return request.META.get("REMOTE_ADDR", "")


@contextlib.contextmanager
def flash_errors(request: HttpRequest) -> Iterator[None]:
    """Turn a CovetError raised inside the block into an error flash message."""
    try:
        yield
    except CovetError as exc:
        messages.error(request, str(exc))


def form_errors(form) -> str:
    """Return a form's errors as one line for a flash message."""
    return "; ".join(f"{form[name].label}: {' '.join(errors)}" if name in form.fields else " ".join(errors)
                     for name, errors in form.errors.items())
