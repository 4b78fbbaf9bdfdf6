"""JSON API for backups, targets and API tokens: thin callers of the services.

Every action that changes something is recorded as an AuditEvent with the
user's name and client address (the services record most of them).
Errors come out as {"error": ...} through backups.api_errors.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from knox import views as knox_views
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import BasicAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from backups import archive, jobs, services
from backups.forms import BackupFilterForm
from backups.models import Backup, DatabaseTarget
from backups.serializers import (BackupAcceptedSerializer, BackupCreateSerializer, BackupSerializer,
                                 ErrorSerializer, MessageSerializer, RestoreAcceptedSerializer,
                                 RecoverSerializer, RestoreCreateSerializer, RestoreSerializer, TargetSerializer,
                                 VerificationAcceptedSerializer)
from backups.views import request_source
from restores import pitr
from restores import services as restore_services
from verification import services as verification_services

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 404, 409)}


def _filter_parameters() -> list[OpenApiParameter]:
    parameters = []
    for name, field in BackupFilterForm.base_fields.items():
        choices = [value for value, _ in getattr(field, "choices", []) if value]
        parameters.append(OpenApiParameter(name, OpenApiTypes.STR, description=str(field.help_text or ""),
                                           enum=choices or None))
    return parameters


def cancel_response(row, request) -> Response:
    """Ask a job row to stop and answer with what happened."""
    message = services.request_cancel(row, request.user.username, request_source(request))
    return Response({"message": message})


class BackupViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                    viewsets.GenericViewSet):
    """The backup catalog: list (newest first), details with live progress, new backups and their jobs."""

    serializer_class = BackupSerializer
    queryset = Backup.objects.select_related("target", "storage").prefetch_related("verifications", "restores")
    lookup_value_regex = r"[\w.-]+"

    def filter_queryset(self, queryset):
        """Apply the catalog filters of the query string to the list."""
        if self.action != "list":
            return queryset
        form = BackupFilterForm(self.request.query_params)
        if not form.is_valid():
            raise ValidationError({field: list(errors) for field, errors in form.errors.items()})
        return form.filter(queryset)

    def get_object(self) -> Backup:
        """Return the backup named in the URL, or 404 with a message that says where to look."""
        backup = services.get_backup(self.kwargs[self.lookup_field])
        self.check_object_permissions(self.request, backup)
        return backup

    @extend_schema(parameters=_filter_parameters())
    def list(self, request, *args, **kwargs):
        """List backups, newest first, filtered by the query string."""
        return super().list(request, *args, **kwargs)

    def retrieve(self, request, *args, **kwargs):
        """Show one backup: its metadata, live progress, verifications and restores."""
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(request=BackupCreateSerializer, responses={202: BackupAcceptedSerializer, **ERRORS})
    def create(self, request):
        """Record a backup and hand it to a worker; 409 while another backup of the target runs."""
        serializer = BackupCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        backup = services.create_backup(serializer.backup_request(request.user.username, request_source(request)))
        job_id = jobs.enqueue_backup(backup)
        body = {"backup": self.get_serializer(backup).data, "job_id": job_id}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={204: None, **ERRORS})
    def destroy(self, request, *args, **kwargs):
        """Delete a backup's object, sidecar and catalog row."""
        services.delete_backup(self.get_object(), request.user.username, request_source(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={202: VerificationAcceptedSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def verify(self, request, pk=None):
        """Queue a verification that reads the backup back whole."""
        run = verification_services.create_verification(self.get_object(), request.user.username,
                                                         request_source(request))
        job_id = jobs.enqueue_verification(run)
        return Response({"verification_id": run.pk, "job_id": job_id}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=RestoreCreateSerializer, responses={202: RestoreAcceptedSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        """Queue a restore of the backup into a new database (or new SQLite file)."""
        serializer = RestoreCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        restore = restore_services.create_restore(
            self.get_object(), serializer.validated_data["target_database"],
            requested_by=request.user.username, source=request_source(request),
            options=serializer.restore_options())
        job_id = jobs.enqueue_restore(restore)
        body = {"restore_id": restore.pk, "job_id": job_id, "restore": RestoreSerializer(restore).data}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: MessageSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a pending or running backup."""
        return cancel_response(self.get_object(), request)


class TargetViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                    mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Database targets; a password given on create goes to a 0600 file and is never returned."""

    serializer_class = TargetSerializer
    queryset = DatabaseTarget.objects.all()
    lookup_field = "name"

    def perform_create(self, serializer):
        """Register the target through the services and record who did it."""
        data = serializer.validated_data
        target = services.add_target(data["name"], data["engine"], data.get("database", ""), data.get("host", ""),
                                     data.get("port"), data.get("user", ""))
        if data.get("password"):
            services.set_target_password(target, data["password"])
        services.audit(self.request.user.username, "target.add", "target", target.name,
                       request_source(self.request), engine=target.engine)
        serializer.instance = target

    @extend_schema(responses={200: OpenApiTypes.OBJECT, **ERRORS})
    @action(detail=True, methods=["get"])
    def archive(self, request, name=None):
        """The target's WAL/binlog archive: newest file, lag, archiver status, gaps and recoverable windows."""
        return Response(archive.archive_summary(self.get_object()))

    @extend_schema(request=RecoverSerializer, responses={202: RestoreAcceptedSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def recover(self, request, name=None):
        """Queue a point-in-time recovery; it is checked (window, gaps, destination) before it is queued."""
        serializer = RecoverSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        target = self.get_object()
        backup_id = serializer.validated_data.get("backup_id")
        restore = pitr.create_pitr_restore(
            target, pitr.recovery_target(**serializer.recovery_kwargs()), serializer.destination(),
            services.get_backup(backup_id) if backup_id else None, request.user.username, request_source(request))
        job_id = jobs.enqueue_restore(restore)
        body = {"restore_id": restore.pk, "job_id": job_id, "restore": RestoreSerializer(restore).data}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    def perform_destroy(self, instance):
        """Remove a target that has no backups left and record who did it."""
        services.remove_target(instance.name)
        services.audit(self.request.user.username, "target.remove", "target", instance.name,
                       request_source(self.request))


TokenSerializer = inline_serializer("Token", {
    "token": serializers.CharField(help_text="Shown once; send it as 'Authorization: Token <token>'"),
    "expiry": serializers.DateTimeField(allow_null=True),
})


class LoginView(knox_views.LoginView):
    """Trade a username and password (HTTP Basic) for an API token, shown once; knox keeps only its hash."""

    authentication_classes = [BasicAuthentication]

    @extend_schema(request=None, responses={200: TokenSerializer, 401: ErrorSerializer})
    def post(self, request, format=None):
        """Create a token for the authenticated user."""
        response = super().post(request, format)
        if response.status_code == status.HTTP_200_OK:
            services.audit(request.user.username, "token.create", "user", request.user.username,
                           request_source(request), via="api")
        return response


class LogoutView(knox_views.LogoutView):
    """Revoke the token the request was made with."""

    @extend_schema(request=None, responses={204: None, 401: ErrorSerializer})
    def post(self, request, format=None):
        """Delete the token used for this request."""
        response = super().post(request, format)
        services.audit(request.user.username, "token.revoke", "user", request.user.username,
                       request_source(request), via="api")
        return response
