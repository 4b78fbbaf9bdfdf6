"""Local-disk storage: atomic writes (temp file, fsync, rename), files 0600."""

import os
import shutil
from pathlib import Path
from typing import BinaryIO, Iterator

from covet.errors import NotFoundError, StorageError, UsageError
from covet.storage.base import ObjectInfo, Storage, check_key
from covet.streams import copy_stream

PARTIAL_SUFFIX = ".partial"


class LocalStorage(Storage):
    """Objects as files under one root directory."""

    kind = "local"

    def __init__(self, root: str):
        if not root:
            raise UsageError("local storage needs a root directory (config {\"root\": \"/path\"})")
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise UsageError(f"storage key {key!r} points outside {self.root}")
        return path

    def _partial(self, path: Path) -> Path:
        # Deterministic, so abort() can find what a killed worker left behind.
        return path.with_name("." + path.name + PARTIAL_SUFFIX)

    def put(self, key: str, stream: BinaryIO, size_hint: int | None = None, tier: str | None = None) -> ObjectInfo:
        path = self._path(key)
        partial = self._partial(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                size = copy_stream(stream, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, path)
            self._fsync_dir(path.parent)
        except OSError as exc:
            _remove(partial)
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        except BaseException:
            _remove(partial)
            raise
        return ObjectInfo(key=key, size=size)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"object {key} is missing from local storage {self.root}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            return ObjectInfo(key=key, size=path.stat().st_size)
        except FileNotFoundError as exc:
            raise NotFoundError(f"object {key} is missing from local storage {self.root}") from exc
        except OSError as exc:
            raise StorageError(f"cannot look up {key} in local storage {self.root}: {exc.strerror}") from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        found = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith("."):
                    continue  # partial writes are not objects
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    found.append(ObjectInfo(key=key, size=full.stat().st_size))
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            _remove(path)
        except OSError as exc:
            raise StorageError(f"cannot delete {path}: {exc.strerror or exc}") from exc

    def abort(self, key: str) -> None:
        _remove(self._partial(self._path(key)))

    def describe(self, key: str) -> str:
        return self._path(key).as_uri()

    def free_bytes(self) -> int | None:
        probe = self.root
        while not probe.exists():
            probe = probe.parent
        return shutil.disk_usage(probe).free


def _remove(path: Path) -> None:
    """Remove a file; one that is not there (or whose directory is not) is not an error."""
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass
