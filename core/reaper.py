"""Noticing dead workers: a running row whose heartbeat stopped is failed and its kind cleans up after it."""

import shutil
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from backups.models import JobStatus
from core import registry
from core.audit import audit
from core.lifecycle import job_tmp_dir


def reap_dead_jobs(now=None) -> list[str]:
    """Mark running rows whose heartbeat stopped as failed and remove what they left; return their ids."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.COVET_HEARTBEAT_TIMEOUT)
    reaped = []
    for kind in registry.kinds():
        model = kind.model
        for row in model.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=stale):
            message = (f"the worker stopped responding (last heartbeat {row.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); "
                       "its partial output was removed — run it again")
            won = model.objects.filter(pk=row.pk, status=JobStatus.RUNNING, heartbeat_at=row.heartbeat_at).update(
                status=JobStatus.FAILED, error=message, finished_at=now)
            if not won:
                continue  # it beat in the meantime, or another housekeeper took it
            leftovers = kind.run_clean_up(row)
            if leftovers:
                model.objects.filter(pk=row.pk).update(error=message + leftovers)
            shutil.rmtree(job_tmp_dir(row), ignore_errors=True)
            audit("system", f"{model._meta.model_name}.reap", model._meta.model_name, row.pk, result="failed",
                  error=message)
            reaped.append(str(row.pk))
    return reaped
