"""The one family of errors a user can meet.

Every error carries an ``exit_code`` (the category a script can act on, see
docs/commands.md, Exit codes) and a ``retryable`` flag that tells an RQ job whether trying
again can help. Messages say what went wrong and what to do. This module
imports no Django so the pipeline, engines and storage can raise these.
"""


class CovetError(Exception):
    """Root of every user-facing failure; exit code 1 (other failure)."""

    exit_code = 1
    retryable = False


class UsageError(CovetError):
    """The request itself is wrong: bad flag, bad value, missing key; exit 2."""

    exit_code = 2


class NotFoundError(CovetError):
    """A named thing (backup, target, storage, file) does not exist; exit 3."""

    exit_code = 3


class DamagedError(CovetError):
    """Stored data failed authentication, checksum or verification; exit 4."""

    exit_code = 4


class ArchiveConflictError(DamagedError):
    """A file of that name is already archived with different content; it is never overwritten (exit 4)."""


class WalGapError(DamagedError):
    """A WAL segment between the base backup and the recovery target is missing from the archive (exit 4)."""


class BinlogFormatError(DamagedError):
    """An archived file is not a binary log, or an event in it is malformed (exit 4)."""


class OutsideWindowError(NotFoundError):
    """The recovery target is not inside the window the archive can reach (exit 3)."""


class ToolError(CovetError):
    """A database tool or server failed; exit 5."""

    exit_code = 5


class StorageError(CovetError):
    """A storage backend failed to put, get, list or delete; exit 6."""

    exit_code = 6
    retryable = True


class ArchivedObjectError(StorageError):
    """The object sits in an archive storage class and must be restored (thawed) before it is read; exit 6."""

    retryable = False


class CancelledError(CovetError):
    """The operator cancelled the job while it ran; exit 1."""


class BusyError(CovetError):
    """Another backup of the same target is already running; exit 1."""

    retryable = True


class WrongKeyError(UsageError):
    """The passphrase or key file given does not unwrap the backup's data key; exit 2."""


class MissingKeyError(UsageError):
    """A backup needs a key and none was given or found; exit 2."""


class QueueUnavailableError(CovetError):
    """The job queue (Redis) cannot be reached, so nothing was queued; exit 1."""

    retryable = True
