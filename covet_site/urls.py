"""URL map: dashboard pages, sign-in, the admin, the JSON API and its OpenAPI schema, the RQ dashboard."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter

from backups.api import BackupViewSet, LoginView, LogoutView, TargetViewSet
from restores.api import RestoreViewSet
from verification.api import VerificationViewSet

router = DefaultRouter()
router.register("backups", BackupViewSet, basename="backup")
router.register("targets", TargetViewSet, basename="target")
router.register("restores", RestoreViewSet, basename="restore")
router.register("verifications", VerificationViewSet, basename="verification")

api_patterns = [
    path("auth/login/", LoginView.as_view(), name="login"),
    path("auth/logout/", LogoutView.as_view(), name="logout"),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="schema"),
    *router.urls,
]

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include((api_patterns, "api"))),
    path("django-rq/", include("django_rq.urls")),
    path("", include("backups.urls")),
]
