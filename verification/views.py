"""Verification pages: a backup's verify button."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from backups.models import Backup
from core.web import flash_errors, request_source
from verification import jobs
from verification.services import create_verification


@login_required
@require_POST
def backup_verify(request: HttpRequest, backup_id: str) -> HttpResponse:
    """Queue a verification of the backup."""
    backup = get_object_or_404(Backup.objects.select_related("target"), pk=backup_id)
    with flash_errors(request):
        run = create_verification(backup, request.user.username, request_source(request))
        jobs.enqueue_verification(run)
        messages.success(request, f"Verification {run.pk} of {backup.id} queued.")
    return redirect("backup_detail", backup_id=backup.id)
