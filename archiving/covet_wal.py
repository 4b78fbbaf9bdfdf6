"""covet-wal: the archive_command and restore_command entry point PostgreSQL runs, once per file.

Stable forms (setup_pitr prints them with absolute paths; servers keep them
in their configuration, so they do not change):

    PYTHON -I -S /abs/archiving/covet_wal.py push --target NAME --socket /abs/run/wal-NAME.sock [--timeout S] %p
    PYTHON -I -S /abs/archiving/covet_wal.py fetch --spool /abs/spool %f %p

``push`` opens the file (``%p`` is relative to the data directory, the
working directory), hands its open descriptor to the target's shipper over
a Unix socket and exits 0 only once the shipper answers that the file is
durably stored; otherwise it prints one line on stderr and exits non-zero,
so PostgreSQL keeps the file and tries again. Exit codes: 1 shipper not
reachable, timeout or other failure; 2 usage; 4 the name is archived with
other content (never overwritten); 6 storage failed.

``fetch`` copies ``SPOOL/%f`` to ``%p`` (atomically) and exits 0, or exits 1
without a word when the spool has no such file: PostgreSQL asks for files
that never existed (the next timeline's history, the segment after the
last) and a missing one is normal. A file the restore staged but has not
decoded yet (``SPOOL/%f.stored``: the server starts before the last one is
decoded) is waited for. If it cannot be had (``SPOOL/%f.failed`` says why,
the restore that decodes it is gone, or it cannot be read or copied) fetch
exits 126: PostgreSQL then stops recovery with FATAL, where exit 1 would
make it end recovery early and promote short of the target.

Only the standard library, and as little of it as possible (``_socket``
instead of ``socket``, ``posix`` instead of ``os``, no argparse, json or
re: with ``-S`` none of them is loaded yet): this runs once per 16 MiB
segment, and each import costs the archive throughput. No key and no
Django: the shipper holds those.
"""

import _socket
import posix
import sys
import time

PROTOCOL = "covet-wal/1"
DEFAULT_TIMEOUT = 60.0
MAX_MESSAGE = 64 * 1024
# The size of covet.streams.COPY_BUFFER, written here: importing it would cost every archive_command run.
COPY_BUFFER = 1024 * 1024

# Exit codes (docs/commands.md); PostgreSQL treats codes above 125 as a
# shell failure (it restarts its archiver; recovery aborts), so push uses none that high.
EXIT_FAILED = 1
EXIT_USAGE = 2
# Above 125 on purpose, for fetch only: PostgreSQL aborts recovery on it (see fetch).
EXIT_ABORT_RECOVERY = 126

# The spool a recovery replays from (restores/services/wal_spool.py writes it): NAME is
# decoded and ready; NAME.stored is staged, still to be decoded; NAME.failed
# holds why it could not be; DECODER holds the decoding process's id.
SPOOL_STAGED = ".stored"
SPOOL_FAILED = ".failed"
SPOOL_DECODER = "covet-decoder.pid"
SPOOL_POLL = 0.01

USAGE = ("usage: covet_wal.py push --target NAME --socket PATH [--timeout SECONDS] WAL_PATH\n"
         "       covet_wal.py fetch --spool DIR WAL_NAME DESTINATION")


class Failure(Exception):
    """Print one line and exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


# The wire format, shared with the shipper: one tab-separated line each way. -------------------

def encode_request(op: str, target: str, name: str = "", path: str = "") -> bytes:
    """Return a request line; ``op`` is 'push' (sent with the file's descriptor) or 'ping'."""
    fields = (PROTOCOL, op, target, name, path)
    if any("\t" in field or "\n" in field for field in fields):
        raise Failure(f"tab or line break in {fields!r}", EXIT_USAGE)
    return ("\t".join(fields) + "\n").encode()


def parse_request(line: bytes) -> tuple[str, str, str, str]:
    """Return (op, target, name, path) from a request line; raise ValueError when it is not one."""
    fields = line.decode().rstrip("\n").split("\t")
    if len(fields) != 5 or fields[0] != PROTOCOL:
        raise ValueError(f"not a {PROTOCOL} request")
    return fields[1], fields[2], fields[3], fields[4]


def encode_reply(ok: bool, detail: str, code: int = 0) -> bytes:
    """Return a reply line: ``ok\\tDETAIL`` or ``error\\tCODE\\tMESSAGE``."""
    detail = " ".join(detail.split())
    return (f"ok\t{detail}\n" if ok else f"error\t{code}\t{detail}\n").encode()


def parse_reply(line: bytes) -> tuple[bool, str, int]:
    """Return (ok, detail, exit code) from a reply line."""
    text = line.decode(errors="replace").rstrip("\n")
    if text.startswith("ok\t"):
        return True, text[3:], 0
    status, code, message = (text.split("\t", 2) + ["", ""])[:3]
    if status != "error" or not code.isdigit():
        return False, f"unexpected reply from the shipper: {text[:200]!r}", EXIT_FAILED
    return False, message, min(max(int(code), 1), 125)


def read_line(sock, deadline: float, what: str) -> bytes:
    """Read one reply line from ``sock`` before ``deadline`` (time.monotonic)."""
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        chunk = sock.recv(MAX_MESSAGE)
        if not chunk:
            raise Failure(f"the shipper closed the connection before answering about {what}")
        data += chunk
        if len(data) > MAX_MESSAGE:
            raise Failure("the shipper's reply is too long")
    return data


# push -------------------------------------------------------------------------------------------

def push(target: str, socket_path: str, wal_path: str, timeout: float) -> str:
    """Hand ``wal_path`` to the shipper of ``target``; return its answer, or raise Failure."""
    name = wal_path.rsplit("/", 1)[-1]
    full = wal_path if wal_path.startswith("/") else f"{posix.getcwd()}/{wal_path}"
    try:
        fd = posix.open(wal_path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError as exc:
        raise Failure(f"cannot open {wal_path}: {exc.strerror}") from None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise Failure(f"no shipper is listening on {socket_path} for target {target}; start it with "
                          f"'manage.py run_shipper --target {target}' (make run does this for targets with PITR on)"
                          ) from None
        except PermissionError:
            raise Failure(f"cannot reach {socket_path}: permission denied; the socket directory must be "
                          f"reachable by this OS user (see setup_pitr)") from None
        request = encode_request("push", target, name, full)
        try:
            sock.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))])
        except (BrokenPipeError, ConnectionResetError):
            pass  # a shipper that refuses this user answers without reading: its reply says why
        posix.close(fd)
        ok, detail, code = parse_reply(read_line(sock, deadline, name))
    except TimeoutError:
        raise Failure(f"timed out after {timeout:g}s waiting for the shipper of {target} to store {name}; "
                      "PostgreSQL will try again") from None
    except OSError as exc:
        raise Failure(f"cannot hand {name} to the shipper on {socket_path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not ok:
        raise Failure(detail, code)
    return detail


# fetch ------------------------------------------------------------------------------------------

def fetch(spool: str, name: str, destination: str) -> bool:
    """Copy ``spool/name`` to ``destination`` atomically; return False (quietly) when the spool lacks it."""
    if "/" in name or name in (".", ".."):
        raise Failure(f"{name!r} is not a WAL file name", EXIT_USAGE)
    source = _open_spooled(spool, name)
    if source is None:
        return False
    partial = destination + ".covet-fetch"
    try:
        out = posix.open(partial, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o600)
        try:
            while posix.sendfile(out, source, None, COPY_BUFFER):
                pass
        finally:
            posix.close(out)
        posix.replace(partial, destination)
    except OSError as exc:
        try:
            posix.unlink(partial)
        except OSError:
            pass
        raise Failure(f"cannot copy {name} from the spool to {destination}: {exc.strerror}",
                      EXIT_ABORT_RECOVERY) from None
    finally:
        posix.close(source)
    return True


def _open_spooled(spool: str, name: str):
    """Return a descriptor of ``spool/name``, waiting while it is staged; None when it was never planned."""
    path = f"{spool}/{name}"
    while True:
        fd = _open_if_there(path, spool, name)
        if fd is not None:
            return fd
        if not _exists(path + SPOOL_STAGED):
            # The decoder makes NAME before it removes NAME.stored: look once more.
            return _open_if_there(path, spool, name)
        if _exists(path + SPOOL_FAILED):
            raise Failure(f"{name} could not be decoded: {_read_text(path + SPOOL_FAILED)}", EXIT_ABORT_RECOVERY)
        if not _alive(_decoder_pid(spool)):
            raise Failure(f"{name} is staged in {spool} but the restore decoding it is gone; recovery stops here: "
                          "run the restore again into a new data directory", EXIT_ABORT_RECOVERY)
        time.sleep(SPOOL_POLL)


def _open_if_there(path: str, spool: str, name: str):
    try:
        return posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Failure(f"cannot read {name} from the spool {spool}: {exc.strerror}", EXIT_ABORT_RECOVERY) from None


def _exists(path: str) -> bool:
    try:
        posix.stat(path)
    except FileNotFoundError:
        return False
    return True


def _read_text(path: str) -> str:
    try:
        fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
    except OSError:
        return "(no reason recorded)"
    try:
        return posix.read(fd, MAX_MESSAGE).decode(errors="replace").strip()
    finally:
        posix.close(fd)


def _decoder_pid(spool: str) -> int:
    text = _read_text(f"{spool}/{SPOOL_DECODER}")
    return int(text) if text.isdigit() else 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        posix.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process (the restore runs as root): it exists
        return True
    return True


# Command line -----------------------------------------------------------------------------------

def parse_args(argv: list) -> tuple[str, dict, list]:
    """Return (command, options, positional arguments); raise Failure (exit 2) on a bad command line."""
    if not argv or argv[0] not in ("push", "fetch"):
        raise Failure(USAGE, EXIT_USAGE)
    command, rest = argv[0], argv[1:]
    allowed = {"push": ("--target", "--socket", "--timeout"), "fetch": ("--spool",)}[command]
    options, positional = {}, []
    while rest:
        item = rest.pop(0)
        if item in allowed and rest:
            options[item[2:]] = rest.pop(0)
        elif item.startswith("--"):
            raise Failure(f"unknown option {item} for {command}\n{USAGE}", EXIT_USAGE)
        else:
            positional.append(item)
    needed = {"push": (("target", "socket"), 1), "fetch": (("spool",), 2)}[command]
    if any(option not in options for option in needed[0]) or len(positional) != needed[1]:
        raise Failure(USAGE, EXIT_USAGE)
    return command, options, positional


def main(argv: list | None = None) -> int:
    """Run one push or fetch; return the exit status."""
    try:
        command, options, positional = parse_args(sys.argv[1:] if argv is None else argv)
        if command == "fetch":
            return 0 if fetch(options["spool"], positional[0], positional[1]) else 1
        try:
            timeout = float(options.get("timeout", DEFAULT_TIMEOUT))
        except ValueError:
            raise Failure(f"--timeout takes seconds, not {options['timeout']!r}", EXIT_USAGE) from None
        push(options["target"], options["socket"], positional[0], timeout)
        return 0
    except Failure as exc:
        sys.stderr.write(f"covet-wal: {exc}\n")
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
