"""The housekeeper: a loop that notices dead workers (stale heartbeats) and cleans up after them."""

import signal
import time

from django.db import close_old_connections

from core.commands import CovetCommand
from core.reaper import reap_dead_jobs


class Command(CovetCommand):
    help = "Mark jobs whose worker died as failed and remove their partial output; loops until SIGTERM/Ctrl-C."

    def add_arguments(self, parser):
        parser.add_argument("--interval", type=float, default=10.0, help="seconds between passes")
        parser.add_argument("--once", action="store_true", help="one pass, then exit")

    def handle(self, *args, **opts):
        self.stopping = False
        if not opts["once"]:
            signal.signal(signal.SIGTERM, self._stop)
        while True:
            close_old_connections()
            for pk in reap_dead_jobs():
                self.stdout.write(f"job {pk}: worker stopped responding; marked failed, partial output removed")
            if opts["once"] or self._sleep(opts["interval"]):
                return

    def _stop(self, *_args) -> None:
        self.stopping = True

    def _sleep(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stopping:
            time.sleep(0.2)
        return self.stopping
