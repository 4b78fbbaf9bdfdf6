"""URL map: dashboard pages, the admin, the JSON API and its OpenAPI schema, the RQ dashboard."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("backups.urls")),
]
