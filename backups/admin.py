"""Admin registrations: useful columns, filters and search; secrets can be set but never shown."""

from django import forms
from django.contrib import admin

from backups.services.targets import record_target_saved
from core.web import request_source
from backups.models import ArchivedLog, AuditEvent, Backup, BackupCopy, BackupPolicy, DatabaseTarget, Storage


class DatabaseTargetForm(forms.ModelForm):
    password = forms.CharField(
        required=False, widget=forms.PasswordInput(render_value=False),
        help_text="Written to a 0600 file in Covet's secrets directory; only its path is stored. Never shown back.",
    )

    class Meta:
        model = DatabaseTarget
        fields = ["name", "engine", "host", "port", "user", "database", "password", "password_ref", "os_user"]


@admin.register(DatabaseTarget)
class DatabaseTargetAdmin(admin.ModelAdmin):
    form = DatabaseTargetForm
    list_display = ["name", "engine", "host", "port", "user", "database", "has_password", "running_backup"]
    list_filter = ["engine"]
    search_fields = ["name", "host", "database"]
    readonly_fields = ["running_backup", "created_at"]

    @admin.display(boolean=True, description="password")
    def has_password(self, obj):
        return bool(obj.password_ref)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        record_target_saved(obj, form.cleaned_data.get("password", ""), not change, request.user.username,
                            request_source(request))


@admin.register(Storage)
class StorageAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "is_default", "created_at"]
    list_filter = ["kind", "is_default"]
    search_fields = ["name"]


@admin.register(BackupPolicy)
class BackupPolicyAdmin(admin.ModelAdmin):
    list_display = ["name", "target", "storage", "compression", "cipher", "retention_days", "enabled"]
    list_filter = ["compression", "cipher", "enabled", "storage"]
    search_fields = ["name", "target__name"]


class BackupCopyInline(admin.TabularInline):
    model = BackupCopy
    extra = 0
    fields = ["storage", "state", "copied_at", "error"]
    readonly_fields = fields
    can_delete = False


@admin.register(BackupCopy)
class BackupCopyAdmin(admin.ModelAdmin):
    list_display = ["backup", "storage", "state", "copied_at"]
    list_filter = ["state", "storage"]
    search_fields = ["backup__id"]
    readonly_fields = ["backup", "storage", "state", "copied_at", "error"]


@admin.register(Backup)
class BackupAdmin(admin.ModelAdmin):
    inlines = [BackupCopyInline]
    list_display = ["id", "target", "database_name", "backup_type", "status", "created_at", "source_bytes",
                    "stored_bytes", "compression", "cipher", "initiated_by"]
    list_filter = ["status", "backup_type", "target__engine", "compression", "cipher", "storage", "created_at"]
    search_fields = ["id", "target__name", "database_name", "sha256", "initiated_by"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Backup._meta.fields]

    def has_add_permission(self, request):
        return False  # backups are made by running them, not by typing rows


@admin.register(ArchivedLog)
class ArchivedLogAdmin(admin.ModelAdmin):
    list_display = ["name", "target", "kind", "timeline", "size", "stored_bytes", "archived_at"]
    list_filter = ["kind", "target"]
    search_fields = ["name", "target__name", "sha256"]


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["at", "actor", "action", "object_type", "object_id", "source", "result"]
    list_filter = ["action", "result", "object_type"]
    search_fields = ["actor", "object_id", "source"]
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
