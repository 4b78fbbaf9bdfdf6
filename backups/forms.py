"""Forms shared by the dashboard and the API: catalog filters, a new backup, a restore."""

from datetime import date, datetime, time, timedelta, timezone as dt_timezone

from django import forms
from django.db.models import QuerySet
from django.utils.dateparse import parse_date, parse_datetime

from backups.models import CIPHER_CHOICES, CODEC_CHOICES, ENGINE_CHOICES, DatabaseTarget, JobStatus
from restores import pitr


class DateOrDateTimeField(forms.Field):
    """An ISO date (2026-11-24) or date-time (2026-11-24T14:30:00Z); naive values are UTC."""

    default_error_messages = {"invalid": "Enter an ISO date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM:SSZ)."}

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, (date, datetime)):
            return value
        text = str(value).strip()
        try:
            parsed = parse_date(text) if len(text) == 10 else parse_datetime(text)
        except ValueError:
            parsed = None
        if parsed is None:
            raise forms.ValidationError(self.error_messages["invalid"], code="invalid")
        return parsed


def _as_utc(value: date | datetime, end_of_day: bool) -> datetime:
    # A bare date covers its whole UTC day, so "from 24th to 24th" means the 24th.
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt_timezone.utc)
    start = datetime.combine(value, time.min, tzinfo=dt_timezone.utc)
    return start + timedelta(days=1) if end_of_day else start


DATE_INPUT = forms.DateInput(attrs={"type": "date"})


class BackupFilterForm(forms.Form):
    """Filter the backup catalog; used by the dashboard's filter bar and GET /api/backups/."""

    target = forms.CharField(required=False, help_text="Target name",
                             widget=forms.TextInput(attrs={"placeholder": "any"}))
    database_type = forms.ChoiceField(required=False, choices=[("", "any engine"), *ENGINE_CHOICES],
                                      help_text="Engine: sqlite, postgresql or mysql")
    database = forms.CharField(required=False, help_text="Database name (or SQLite file path); part of it matches",
                               widget=forms.TextInput(attrs={"placeholder": "name contains"}))
    status = forms.ChoiceField(required=False, choices=[("", "any status"), *JobStatus.choices])
    created_after = DateOrDateTimeField(
        required=False, help_text="Created at or after this UTC date or date-time", widget=DATE_INPUT)
    created_before = DateOrDateTimeField(
        required=False, help_text="Created before this UTC date-time, or on or before this UTC date",
        widget=DATE_INPUT)

    def filter(self, queryset: QuerySet) -> QuerySet:
        """Return ``queryset`` narrowed by every valid, non-empty field (call is_valid() first)."""
        data = self.cleaned_data
        if data.get("target"):
            queryset = queryset.filter(target__name=data["target"])
        if data.get("database_type"):
            queryset = queryset.filter(target__engine=data["database_type"])
        if data.get("database"):
            queryset = queryset.filter(database_name__icontains=data["database"])
        if data.get("status"):
            queryset = queryset.filter(status=data["status"])
        if data.get("created_after"):
            queryset = queryset.filter(created_at__gte=_as_utc(data["created_after"], end_of_day=False))
        if data.get("created_before"):
            queryset = queryset.filter(created_at__lt=_as_utc(data["created_before"], end_of_day=True))
        return queryset


class NewBackupForm(forms.Form):
    """The dashboard's "New backup" form."""

    target = forms.ModelChoiceField(queryset=DatabaseTarget.objects.all(), to_field_name="name",
                                    empty_label=None)
    compression = forms.ChoiceField(choices=CODEC_CHOICES, initial="zstd")
    cipher = forms.ChoiceField(choices=CIPHER_CHOICES, initial="aes-256-gcm",
                               help_text="Encrypted with the site's default key unless none")


class RestoreForm(forms.Form):
    """The detail page's restore form."""

    target_database = forms.CharField(
        max_length=1024, label="Restore into",
        help_text="A new database name, or for SQLite a new file path; an existing one is never overwritten")


class RecoverForm(forms.Form):
    """The target page's point-in-time recovery form: one recovery target, one destination."""

    KINDS = [("time", "Time (UTC unless an offset is given)"), ("latest", "Latest archived transaction"),
             ("lsn", "PostgreSQL LSN"), ("xid", "PostgreSQL transaction id"), ("name", "PostgreSQL restore point"),
             ("stop_position", "MySQL binlog FILE:POS"), ("stop_gtid", "MySQL GTID")]

    kind = forms.ChoiceField(choices=KINDS, initial="time", label="Recover to")
    value = forms.CharField(max_length=255, required=False, label="Value",
                            help_text="e.g. 2026-11-24 14:30:06+00, 0/16B3748, 745, before_upgrade, mysql-bin.000012:4711")
    inclusive = forms.BooleanField(required=False, initial=True, label="Include the target itself")
    backup_id = forms.CharField(max_length=64, required=False, label="Backup",
                                help_text="Empty: the newest suitable backup")
    data_directory = forms.CharField(max_length=1024, required=False, label="New data directory (PostgreSQL)")
    port = forms.IntegerField(required=False, min_value=1, max_value=65535, label="Port (PostgreSQL)")
    start = forms.BooleanField(required=False, initial=True, label="Start the server and promote at the target")
    target_database = forms.CharField(max_length=255, required=False, label="New schema (MySQL)")

    def clean(self):
        data = super().clean()
        if data.get("kind") != "latest" and not data.get("value"):
            self.add_error("value", "say where to stop")
        return data

    def recovery_kwargs(self) -> dict:
        """Return the arguments of restores.pitr.recovery_target."""
        data = self.cleaned_data
        kind, value = data["kind"], data.get("value", "").strip()
        kwargs = {"inclusive": data["inclusive"]}
        if kind in ("time", "latest"):
            kwargs["pitr_target"] = "latest" if kind == "latest" else value
        else:
            kwargs[kind] = value
        return kwargs

    def destination(self) -> dict:
        """Return the engine's destination for the cleaned data."""
        data = self.cleaned_data
        return pitr.destination(data.get("data_directory"), start=data.get("start") and bool(data.get("data_directory")),
                                port=data.get("port"), database=data.get("target_database"))
