from django.contrib import admin

from restores.models import RestoreRequest


@admin.register(RestoreRequest)
class RestoreRequestAdmin(admin.ModelAdmin):
    list_display = ["id", "backup", "target_database", "download_only", "status", "created_at", "requested_by"]
    list_filter = ["status", "download_only"]
    search_fields = ["backup__id", "target_database", "requested_by"]
    readonly_fields = [f.name for f in RestoreRequest._meta.fields]
