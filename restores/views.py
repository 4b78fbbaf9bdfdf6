"""Restore pages: a backup's restore button, and a target's point-in-time recovery page and form.

Pages never run a pipeline: they call a service, enqueue the job and
redirect with a flash message.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from archiving.services.windows import archive_summary
from backups.models import ArchivedLog, Backup, DatabaseTarget
from backups.services.catalog import get_backup
from backups.services.targets import get_target
from core.web import flash_errors, form_errors, request_source
from covet.errors import NotFoundError
from restores import jobs
from restores.services import pitr
from restores.forms import RecoverForm, RestoreForm
from restores.models import RestoreRequest
from restores.services.restore import create_restore



def _target_or_404(name: str) -> DatabaseTarget:
    try:
        return get_target(name)
    except NotFoundError as exc:
        raise Http404(str(exc)) from None


@login_required
def target_detail(request: HttpRequest, name: str) -> HttpResponse:
    """Show a target's archive (lag, gaps, recoverable windows), its recoveries, and the recovery form."""
    target = _target_or_404(name)
    return render(request, "restores/target.html", {
        "target": target,
        "summary": archive_summary(target),
        "recent_logs": ArchivedLog.objects.filter(target=target).order_by("-archived_at")[:20],
        "recoveries": RestoreRequest.objects.filter(backup__target=target).exclude(pitr={})[:20],
        "form": RecoverForm(),
    })


@login_required
@require_POST
def target_recover(request: HttpRequest, name: str) -> HttpResponse:
    """Check and queue a point-in-time recovery of the target."""
    target = _target_or_404(name)
    form = RecoverForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Recovery not started: {form_errors(form)}")
        return redirect("target_detail", name=target.name)
    with flash_errors(request):
        backup_id = form.cleaned_data.get("backup_id")
        restore = pitr.create_pitr_restore(
            target, pitr.recovery_target(**form.recovery_kwargs()), form.destination(),
            get_backup(backup_id) if backup_id else None, request.user.username, request_source(request))
        jobs.enqueue_restore(restore)
        messages.success(request, f"Recovery {restore.pk} of {target.name} from {restore.backup_id} queued.")
    return redirect("target_detail", name=target.name)


@login_required
@require_POST
def backup_restore(request: HttpRequest, backup_id: str) -> HttpResponse:
    """Queue a restore of the backup into a new database or file."""
    backup = get_object_or_404(Backup.objects.select_related("target"), pk=backup_id)
    form = RestoreForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Restore not started: {form_errors(form)}")
        return redirect("backup_detail", backup_id=backup.id)
    with flash_errors(request):
        restore = create_restore(backup, form.cleaned_data["target_database"],
                                                  requested_by=request.user.username, source=request_source(request))
        jobs.enqueue_restore(restore)
        messages.success(request, f"Restore {restore.pk} into {restore.target_database} queued.")
    return redirect("backup_detail", backup_id=backup.id)
