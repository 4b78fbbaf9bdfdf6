"""The restore form of a backup's page and the point-in-time recovery form of a target's page."""

from django import forms

from restores.services import pitr


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
        """Return the arguments of restores.services.pitr.recovery_target."""
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
