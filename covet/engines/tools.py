"""Running database tools safely: argument lists, private 0600 credential files, streamed output.

Shared by the server engines. A tool's password never appears on its command
line; it travels in a file (PGPASSFILE, --defaults-extra-file) written 0600
into a private 0700 directory that is removed afterwards.
"""

import contextlib
import fcntl
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import IO, Callable, Iterator, Sequence

from covet.errors import ToolError

STDERR_TAIL = 4000  # characters of a tool's stderr kept for the error message
# A dump tool's stdout pipe holds this much instead of Linux's default 64 KiB
# (1 MiB is the default /proc/sys/fs/pipe-max-size), so the tool keeps
# writing while the reader is busy with a chunk (sealing it, writing it to
# storage): about 5 % off a compressor-bound backup on two cores.
PIPE_SIZE = 1 << 20


@contextlib.contextmanager
def private_dir(base: str, prefix: str = "covet-") -> Iterator[Path]:
    """Yield a new 0700 directory under ``base``; remove it and everything in it on exit."""
    os.makedirs(base, mode=0o700, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_secret_file(directory: Path, name: str, content: str) -> Path:
    """Write ``content`` to ``directory/name`` with mode 0600 from the start; return the path."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    return path


def read_password(password_file: str | None) -> str | None:
    """Return the password kept in ``password_file`` (one trailing newline dropped), or None."""
    if not password_file:
        return None
    try:
        return Path(password_file).read_text().removesuffix("\n")
    except OSError as exc:
        raise ToolError(f"cannot read the password file {password_file}: {exc.strerror}") from exc


def stderr_tail(path: Path) -> str:
    """Return the end of a tool's stderr file, stripped, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-STDERR_TAIL:].strip()


def run_tool(args: Sequence[str], env: dict, tool: str, stdin: IO | None = None,
             input_bytes: bytes | None = None, timeout: float | None = None) -> bytes:
    """Run a tool to completion and return its stdout; raise ToolError with its stderr when it fails."""
    try:
        done = subprocess.run(list(args), env=env, stdin=stdin, input=input_bytes, capture_output=True,
                              timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise ToolError(f"{tool} is not installed ({args[0]} not found)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ToolError(f"{tool} did not finish within {timeout} s") from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace")[-STDERR_TAIL:].strip() or f"exit status {done.returncode}"
        raise ToolError(f"{tool} failed: {message}")
    return done.stdout


def widen_pipe(pipe: IO) -> None:
    """Let ``pipe`` buffer PIPE_SIZE bytes where the system allows it (Linux); leave it as it is elsewhere."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)


class PipeFeeder:
    """Write chunks into a tool's stdin from a thread, so the caller makes the next chunk meanwhile.

    Written from the caller's thread, a pipe write blocks whenever the tool
    is busy, and the decryption and decompression feeding it stop with it:
    the two cores then take turns instead of working together (unpacking a
    base backup: 3.1-3.5 s instead of 4.4-5.7 s here). At most ``depth``
    chunks wait in between, so memory stays bounded.
    """

    def __init__(self, pipe: IO, depth: int = 8):
        widen_pipe(pipe)
        self.pipe = pipe
        self.broken = False
        self._queue: queue.Queue = queue.Queue(depth)
        self._thread = threading.Thread(target=self._run, name="pipe-feeder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self.broken:
                continue  # the tool stopped reading: drop the rest, so put() never blocks for good
            try:
                self.pipe.write(chunk)
            except OSError:  # BrokenPipeError above all: the tool's exit status says why
                self.broken = True

    def put(self, chunk: bytes) -> bool:
        """Queue ``chunk``; return False once the tool has stopped reading (there is no point going on)."""
        if self.broken:
            return False
        self._queue.put(chunk)
        return True

    def close(self) -> None:
        """Write what is queued, then close the tool's stdin (it sees the end of its input)."""
        self._queue.put(None)
        self._thread.join()
        with contextlib.suppress(OSError):
            self.pipe.close()

    def abandon(self) -> None:
        """Stop without writing the rest; kill the tool first, or a write in progress may wait for it."""
        self.broken = True
        self.close()


class EndHook:
    """A stream that calls ``on_end`` once, after the wrapped stream's last byte and before EOF is returned.

    An exception from ``on_end`` comes out of that read, so a check it makes
    (a tool's exit status, a checksum) decides whether the stream ended well.
    """

    def __init__(self, stream, on_end: Callable[[], None]):
        self.stream = stream
        self.on_end = on_end
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if not data and not self.ended:
            self.ended = True
            self.on_end()
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()


class ToolStream:
    """The stdout of a running tool as a readable stream.

    At the end of the output the tool is waited for; a non-zero exit raises
    ToolError carrying the tool's own stderr, so a dump that failed half way
    can never pass for a complete one. ``close`` kills a tool still running.
    """

    def __init__(self, args: Sequence[str], env: dict, tool: str, stderr_path: Path, cwd: str | None = None):
        self.tool = tool
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")
        try:
            self.process = subprocess.Popen(list(args), env=env, stdout=subprocess.PIPE, stderr=self._stderr,
                                            stdin=subprocess.DEVNULL, cwd=cwd)
        except FileNotFoundError as exc:
            self._stderr.close()
            raise ToolError(f"{tool} is not installed ({args[0]} not found)") from exc
        widen_pipe(self.process.stdout)
        self._checked = False

    def read(self, size: int = -1) -> bytes:
        data = self.process.stdout.read(size)
        if not data and not self._checked:
            self._checked = True
            self.check()
        return data

    def readinto(self, buffer) -> int:
        count = self.process.stdout.readinto(buffer)
        if not count and not self._checked:
            self._checked = True
            self.check()
        return count

    def check(self) -> None:
        """Wait for the tool; raise ToolError with its stderr unless it exited 0."""
        returncode = self.process.wait()
        if returncode != 0:
            message = stderr_tail(self.stderr_path) or f"exit status {returncode}"
            raise ToolError(f"{self.tool} failed: {message}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> "ToolStream":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def tool_env(**extra: str) -> dict:
    """Return a minimal environment for a tool: PATH, locale and ``extra``; nothing secret inherited."""
    env = {key: os.environ[key] for key in ("PATH", "LANG", "LC_ALL", "HOME", "TZ") if key in os.environ}
    env.update(extra)
    return env
