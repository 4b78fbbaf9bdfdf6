"""The audit trail: who did what, when, from where, with which result."""

import getpass
import socket

from backups.models import AuditEvent


def cli_source() -> str:
    """Return where a command-line action comes from, for audit events."""
    return f"cli:{getpass.getuser()}@{socket.gethostname()}"


def audit(actor: str, action: str, object_type: str = "", object_id: str = "", source: str = "",
          result: str = "ok", **detail) -> AuditEvent:
    """Record who did what; ``detail`` must never hold a secret."""
    return AuditEvent.objects.create(
        actor=actor or "system", action=action, object_type=object_type, object_id=str(object_id),
        source=source, result=result, detail=detail,
    )
