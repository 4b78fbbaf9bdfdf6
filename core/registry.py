"""The kinds of job rows the apps run, registered by each app when Django starts.

The core (reaper, cancel_job, RQ entry point) works from this list, so it
never imports the apps that build on it. A kind names its service and its
clean-up by dotted path, imported only when a job of that kind runs, died or
failed: starting a command does not load every app's services.
"""

from dataclasses import dataclass

from django.utils.module_loading import import_string

from covet.errors import NotFoundError


@dataclass(frozen=True)
class JobKind:
    """One kind of job row (a TrackedJob model) and what the core must know to look after it."""

    name: str
    model: type
    run: str
    """Dotted path of ``run(pk)``: the service that runs one job of this kind in a worker."""
    clean_up: str = ""
    """Dotted path of ``clean_up(row) -> str``: remove what a dead or failed job of this kind left behind;
    return a note for the row's error when something could not be removed, else ""."""
    retries: int = 0
    """How many times RQ runs a job of this kind again after a retryable error (CovetError.retryable)."""

    def run_service(self, pk) -> None:
        """Run the job row with ``pk`` through the kind's service."""
        import_string(self.run)(pk)

    def run_clean_up(self, row) -> str:
        """Call the kind's clean-up on ``row``; return its note."""
        return import_string(self.clean_up)(row) if self.clean_up else ""

    def get(self, pk):
        """Return the row with ``pk`` or raise NotFoundError."""
        row = self.model.objects.filter(pk=pk).first()
        if row is None:
            raise NotFoundError(f"no {self.model._meta.verbose_name} with id {pk}")
        return row


_KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> None:
    """Add a kind of job row; called from an app's AppConfig.ready()."""
    _KINDS[kind.name] = kind


def kinds() -> list[JobKind]:
    """Return every registered kind, in the order the apps registered them."""
    return list(_KINDS.values())


def kind(name: str) -> JobKind:
    """Return the kind called ``name``."""
    return _KINDS[name]


def kind_of(row) -> JobKind:
    """Return the kind of a job row."""
    return next(k for k in _KINDS.values() if isinstance(row, k.model))
