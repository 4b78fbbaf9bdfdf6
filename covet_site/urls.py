"""URL map: each app's pages and API, sign-in, the admin, the OpenAPI schema, the RQ dashboard."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter

from archiving.api import TargetArchiveView
from backups.api import BackupViewSet, TargetViewSet
from core.tokens import LoginView, LogoutView
from restores.api import BackupRestoreView, RestoreViewSet, TargetRecoverView
from verification.api import BackupVerifyView, VerificationViewSet

router = DefaultRouter()
router.register("backups", BackupViewSet, basename="backup")
router.register("targets", TargetViewSet, basename="target")
router.register("restores", RestoreViewSet, basename="restore")
router.register("verifications", VerificationViewSet, basename="verification")

api_patterns = [
    path("auth/login/", LoginView.as_view(), name="login"),
    path("auth/logout/", LogoutView.as_view(), name="logout"),
    path("schema/", SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]), name="schema"),
    # Actions on a backup or target that other apps carry out, at the paths of the catalog's resources.
    path("backups/<str:id>/verify/", BackupVerifyView.as_view(), name="backup-verify"),
    path("backups/<str:id>/restore/", BackupRestoreView.as_view(), name="backup-restore"),
    path("targets/<slug:name>/archive/", TargetArchiveView.as_view(), name="target-archive"),
    path("targets/<slug:name>/recover/", TargetRecoverView.as_view(), name="target-recover"),
    *router.urls,
]

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include((api_patterns, "api"))),
    path("django-rq/", include("django_rq.urls")),
    path("", include("backups.urls")),
    path("", include("restores.urls")),
    path("", include("verification.urls")),
]
