"""Forms shared by the dashboard and the API: catalog filters, a new backup, a restore."""

from datetime import date, datetime, time, timedelta, timezone as dt_timezone

from django import forms
from django.db.models import QuerySet
from django.utils.dateparse import parse_date, parse_datetime

from backups.models import CIPHER_CHOICES, CODEC_CHOICES, ENGINE_CHOICES, DatabaseTarget, JobStatus


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
