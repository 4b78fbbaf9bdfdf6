"""Dashboard pages: the catalog, one backup's details, and the buttons that queue work.

Pages never run a pipeline: they call a service, enqueue the job and
redirect with a flash message. A CovetError becomes that message, never a
traceback.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from archiving.services.windows import archive_summary
from backups import jobs
from backups.forms import BackupFilterForm, NewBackupForm
from backups.models import Backup, DatabaseTarget
from backups.services.catalog import backup_summary, get_backup
from backups.services.objects import delete_backup
from backups.services.runs import BackupRequest, create_backup
from core.cancel import request_cancel
from core.web import flash_errors, form_errors, request_source
from covet.errors import NotFoundError

PAGE_SIZE = 25





def _backup_or_404(backup_id: str) -> Backup:
    try:
        return get_backup(backup_id)
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
        "archives": [(target, archive_summary(target))
                     for target in DatabaseTarget.objects.filter(pitr_enabled=True)],
    })





@login_required
@require_POST
def backup_create(request: HttpRequest) -> HttpResponse:
    """Queue a backup from the dashboard form."""
    form = NewBackupForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Backup not started: {form_errors(form)}")
        return redirect("dashboard")
    with flash_errors(request):
        backup = create_backup(BackupRequest(
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
    # Pairs built here, not looked up in the template: a table or tag named
    # "items", "keys" or "values" would shadow the dict's method there.
    return render(request, "backups/detail.html", {
        "backup": backup,
        "tags": list(backup.tags.items()),
        "manifest_tables": list(backup.manifest.get("tables", {}).items()),
        "summary": backup_summary(backup),
        "verifications": backup.verifications.all(),
        "restores": backup.restores.all(),
    })



@login_required
@require_POST
def backup_cancel(request: HttpRequest, backup_id: str) -> HttpResponse:
    """Ask a pending or running backup to stop."""
    backup = _backup_or_404(backup_id)
    with flash_errors(request):
        messages.info(request, request_cancel(backup, request.user.username, request_source(request)))
    return redirect("backup_detail", backup_id=backup.id)


@login_required
@require_http_methods(["GET", "POST"])
def backup_delete(request: HttpRequest, backup_id: str) -> HttpResponse:
    """Ask for confirmation (GET), then delete the backup's object, sidecar and row (POST)."""
    backup = _backup_or_404(backup_id)
    if request.method != "POST":
        return render(request, "backups/confirm_delete.html", {"backup": backup})
    with flash_errors(request):
        delete_backup(backup, request.user.username, request_source(request))
        messages.success(request, f"Backup {backup_id} deleted.")
        return redirect("dashboard")
    return redirect("backup_detail", backup_id=backup.id)
