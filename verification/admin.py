from django.contrib import admin

from verification.models import VerificationRun


@admin.register(VerificationRun)
class VerificationRunAdmin(admin.ModelAdmin):
    list_display = ["id", "backup", "status", "created_at", "finished_at", "requested_by"]
    list_filter = ["status"]
    search_fields = ["backup__id", "requested_by"]
    readonly_fields = [f.name for f in VerificationRun._meta.fields]
