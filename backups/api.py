"""JSON API for backups and targets: thin callers of the services.

Every action that changes something is recorded as an AuditEvent with the
user's name and client address (the services record most of them).
Errors come out as {"error": ...} through core.api_errors.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from backups import jobs
from backups.forms import BackupFilterForm
from backups.models import Backup, DatabaseTarget
from backups.serializers import BackupAcceptedSerializer, BackupCreateSerializer, BackupSerializer, TargetSerializer
from backups.services.catalog import get_backup
from backups.services.objects import delete_backup
from backups.services.runs import create_backup
from backups.services.targets import add_target, remove_target, set_target_password
from core.api import ERRORS, MessageSerializer, cancel_response
from core.web import request_source



def _filter_parameters() -> list[OpenApiParameter]:
    parameters = []
    for name, field in BackupFilterForm.base_fields.items():
        choices = [value for value, _ in getattr(field, "choices", []) if value]
        parameters.append(OpenApiParameter(name, OpenApiTypes.STR, description=str(field.help_text or ""),
                                           enum=choices or None))
    return parameters


class BackupViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                    viewsets.GenericViewSet):
    """The backup catalog: list (newest first), details with live progress, new backups, cancel and delete."""

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
        backup = get_backup(self.kwargs[self.lookup_field])
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
        backup = create_backup(serializer.backup_request(request.user.username, request_source(request)))
        job_id = jobs.enqueue_backup(backup)
        body = {"backup": self.get_serializer(backup).data, "job_id": job_id}
        return Response(body, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={204: None, **ERRORS})
    def destroy(self, request, *args, **kwargs):
        """Delete a backup's object, sidecar and catalog row."""
        delete_backup(self.get_object(), request.user.username, request_source(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

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
        target = add_target(data["name"], data["engine"], data.get("database", ""), data.get("host", ""),
                            data.get("port"), data.get("user", ""), actor=self.request.user.username,
                            source=request_source(self.request))
        if data.get("password"):
            set_target_password(target, data["password"])
        serializer.instance = target

    def perform_destroy(self, instance):
        """Remove a target that has no backups left and record who did it."""
        remove_target(instance.name, self.request.user.username, request_source(self.request))
