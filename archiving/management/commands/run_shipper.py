"""Run a PostgreSQL target's WAL shipper: the process its archive_command hands segments to."""

import gc
import signal


from archiving.services.archive import Archive
from covet.errors import UsageError
from core.commands import CovetCommand
from covet.pipeline import codecs
from archiving.services import paths
from archiving.services.server import Shipper
from archiving.services.store import WalStore
from backups.services.targets import get_target


class Command(CovetCommand):
    help = ("Receive WAL files from a PostgreSQL target's archive_command and store them (compressed, encrypted "
            "with the target's archive key); runs until SIGTERM/Ctrl-C. One log line per file. "
            "Exit codes: 0 stopped, 2 usage (archiving not set up), 3 no such target.")

    def add_arguments(self, parser):
        parser.add_argument("--target", required=True, help="a PostgreSQL target with PITR set up (setup_pitr)")
        parser.add_argument("--socket-dir", help="directory of the socket (default: COVET_RUN_DIR, else /run/covet "
                                                 "as root, else <var>/run); must match the archive_command")
        parser.add_argument("--workers", type=int, default=2,
                            help="files stored at once (more helps a high-latency storage such as S3)")
        parser.add_argument("--read-ahead", type=int, default=2,
                            help="ready segments stored before PostgreSQL asks (0: off)")
        parser.add_argument("--queue-max", type=int, metavar="BYTES",
                            help="when PostgreSQL's ready backlog exceeds this, acknowledge WAL WITHOUT archiving it "
                                 "(keeps pg_wal from filling the disk, breaks point-in-time recovery); default off")
        parser.add_argument("--status-interval", type=float, default=5.0, help="seconds between heartbeats")
        parser.add_argument("--encryption-password-file", help="passphrase file of the archive's key-encryption key")
        parser.add_argument("--key-file", help="key file of the archive's key-encryption key")

    def handle(self, *args, **opts):
        target = get_target(opts["target"])
        if target.engine != "postgresql":
            raise UsageError(f"target {target.name} is {target.engine}; its archiver is "
                             f"'manage.py binlog_archive --target {target.name}'")
        directory = paths.socket_dir(opts["socket_dir"])
        # The shipper's parallelism is across files (workers, read-ahead); one libzstd
        # thread per 16 MiB segment costs about a fifth less CPU than two splitting it.
        codecs.ZSTD_THREADS = 1
        archive = Archive(target, opts["encryption_password_file"], opts["key_file"])  # the key is unwrapped here, once
        store = WalStore(archive, workers=opts["workers"], read_ahead=opts["read_ahead"], queue_max=opts["queue_max"])
        shipper = Shipper(target, store, paths.socket_path(target, directory), paths.os_user(target),
                          status_interval=opts["status_interval"])
        # Everything loaded so far (Django, models, settings) lives as long as the process: keep
        # the collector from walking it again and again while segments stream through.
        gc.freeze()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: shipper.stop.set())
        shipper.open()
        try:
            paths.check_reachable(target, directory)
            shipper.serve()
        finally:
            shipper.close()
