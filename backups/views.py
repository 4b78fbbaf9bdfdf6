"""Dashboard pages: the catalog, one backup's details, and the buttons that queue work.

Pages never run a pipeline: they call a service, enqueue the job and
redirect with a flash message. A CovetError becomes that message, never a
traceback.
"""

import contextlib
from typing import Iterator

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from backups import archive, jobs, services
from covet.errors import CovetError, NotFoundError
from backups.forms import BackupFilterForm, NewBackupForm, RecoverForm, RestoreForm
from backups.models import ArchivedLog, Backup, DatabaseTarget
from restores import pitr
from restores import services as restore_services
from restores.models import RestoreRequest
from verification import services as verification_services

PAGE_SIZE = 25


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


def _form_errors(form) -> str:
    return "; ".join(f"{form[name].label}: {' '.join(errors)}" if name in form.fields else " ".join(errors)
                     for name, errors in form.errors.items())


def _backup_or_404(backup_id: str) -> Backup:
    try:
        return services.get_backup(backup_id)
    except NotFoundError as exc:
        raise Http404(str(exc)) from None


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Show the catalog, newest first, filtered and paginated, with the "New backup" form."""
    filters = BackupFilterForm(request.GET)
    filters.is_valid()  # invalid fields are shown with their error and ignored; valid ones still filter
    backups = filters.filter(Backup.objects.select_related("target", "storage"))
    page = Paginator(backups, PAGE_SIZE).get_page(request.GET.get("page"))
    new_backup = NewBackupForm()
    return render(request, "backups/dashboard.html", {
        "filters": filters,
        "page": page,
        "new_backup": new_backup,
        "has_targets": new_backup.fields["target"].queryset.exists(),
        "archives": [(target, archive.archive_summary(target))
                     for target in DatabaseTarget.objects.filter(pitr_enabled=True)],
    })


def _target_or_404(name: str) -> DatabaseTarget:
    try:
        return services.get_target(name)
    except NotFoundError as exc:
        raise Http404(str(exc)) from None


@login_required
def target_detail(request: HttpRequest, name: str) -> HttpResponse:
    """Show a target's archive (lag, gaps, recoverable windows), its recoveries, and the recovery form."""
    target = _target_or_404(name)
    return render(request, "backups/target.html", {
        "target": target,
        "summary": archive.archive_summary(target),
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
        messages.error(request, f"Recovery not started: {_form_errors(form)}")
        return redirect("target_detail", name=target.name)
    with flash_errors(request):
        backup_id = form.cleaned_data.get("backup_id")
        restore = pitr.create_pitr_restore(
            target, pitr.recovery_target(**form.recovery_kwargs()), form.destination(),
            services.get_backup(backup_id) if backup_id else None, request.user.username, request_source(request))
        jobs.enqueue_restore(restore)
        messages.success(request, f"Recovery {restore.pk} of {target.name} from {restore.backup_id} queued.")
    return redirect("target_detail", name=target.name)


@login_required
@require_POST
def backup_create(request: HttpRequest) -> HttpResponse:
    """Queue a backup from the dashboard form."""
    form = NewBackupForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Backup not started: {_form_errors(form)}")
        return redirect("dashboard")
    with flash_errors(request):
        backup = services.create_backup(services.BackupRequest(
            target=form.cleaned_data["target"], compression=form.cleaned_data["compression"],
            cipher=form.cleaned_data["cipher"], initiated_by=request.user.username, source=request_source(request),
        ))
        job_id = jobs.enqueue_backup(backup)
        messages.success(request, f"Backup {backup.id} of {backup.target.name} queued (job {job_id}).")
    return redirect("dashboard")


@login_required
def backup_detail(request: HttpRequest, backup_id: str) -> HttpResponse:
    """Show every fact about one backup, its verifications and restores, and its actions."""
    backup = _backup_or_404(backup_id)
    return render(request, "backups/detail.html", {
        "backup": backup,
        "summary": services.backup_summary(backup),
        "verifications": backup.verifications.all(),
        "restores": backup.restores.all(),
        "restore_form": RestoreForm(),
    })


@login_required
@require_POST
def backup_verify(request: HttpRequest, backup_id: str) -> HttpResponse:
    """Queue a verification of the backup."""
    backup = _backup_or_404(backup_id)
    with flash_errors(request):
        run = verification_services.create_verification(backup, request.user.username, request_source(request))
        jobs.enqueue_verification(run)
        messages.success(request, f"Verification {run.pk} of {backup.id} queued.")
    return redirect("backup_detail", backup_id=backup.id)


@login_required
@require_POST
def backup_restore(request: HttpRequest, backup_id: str) -> HttpResponse:
    """Queue a restore of the backup into a new database or file."""
    backup = _backup_or_404(backup_id)
    form = RestoreForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Restore not started: {_form_errors(form)}")
        return redirect("backup_detail", backup_id=backup.id)
    with flash_errors(request):
        restore = restore_services.create_restore(backup, form.cleaned_data["target_database"],
                                                  requested_by=request.user.username, source=request_source(request))
        jobs.enqueue_restore(restore)
        messages.success(request, f"Restore {restore.pk} into {restore.target_database} queued.")
    return redirect("backup_detail", backup_id=backup.id)


@login_required
@require_POST
def backup_cancel(request: HttpRequest, backup_id: str) -> HttpResponse:
    """Ask a pending or running backup to stop."""
    backup = _backup_or_404(backup_id)
    with flash_errors(request):
        messages.info(request, services.request_cancel(backup, request.user.username, request_source(request)))
    return redirect("backup_detail", backup_id=backup.id)


@login_required
@require_http_methods(["GET", "POST"])
def backup_delete(request: HttpRequest, backup_id: str) -> HttpResponse:
    """Ask for confirmation (GET), then delete the backup's object, sidecar and row (POST)."""
    backup = _backup_or_404(backup_id)
    if request.method != "POST":
        return render(request, "backups/confirm_delete.html", {"backup": backup})
    with flash_errors(request):
        services.delete_backup(backup, request.user.username, request_source(request))
        messages.success(request, f"Backup {backup_id} deleted.")
        return redirect("dashboard")
    return redirect("backup_detail", backup_id=backup.id)
