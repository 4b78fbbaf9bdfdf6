"""What every Covet command shares: typed errors become one line and a fixed exit code, and progress bars."""

import contextlib
import sys
from typing import Iterator

from django.core.management.base import BaseCommand, CommandError

from covet.errors import CovetError
from core.progress import ProgressCallback


class CovetCommand(BaseCommand):
    """A command whose CovetErrors exit with their category's code (see docs/commands.md, Exit codes)."""

    # Django's system checks import the whole URLconf (DRF, drf-spectacular,
    # every view): over 0.1 s of start-up for each scripted backup. They still
    # run with migrate (make run), `manage.py check` and the test suite.
    requires_system_checks = []

    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except CovetError as exc:
            raise CommandError(str(exc), returncode=exc.exit_code) from exc
        except KeyboardInterrupt:
            raise CommandError("interrupted", returncode=1) from None


@contextlib.contextmanager
def progress_bar(description: str, enabled: bool | None = None) -> Iterator[ProgressCallback | None]:
    """Yield a progress callback drawing a rich bar on a terminal (stderr), or None on a pipe."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)
    from rich.console import Console

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, expected: int | None) -> None:
            bar.update(task, completed=done, total=max(expected, done) if expected else None)

        yield update
