"""Unpacking a base backup's tar stream with GNU tar, fed from a thread: files, bad input, a failing source."""

import io
import tarfile
import threading

import pytest

from covet.engines import pg_base
from covet.errors import DamagedError


def _tar(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class _FailingAfter(io.RawIOBase):
    """A source that gives ``good`` bytes, then fails as an altered frame would."""

    def __init__(self, good: bytes):
        self.good = io.BytesIO(good)

    def read(self, size=-1):
        data = self.good.read(size)
        if not data:
            raise DamagedError("frame 7 failed authentication")
        return data


def test_a_base_backup_unpacks_every_file_through_the_feeder(tmp_path):
    big = bytes(range(256)) * 40_000  # 10 MiB: many chunks through the queue and the widened pipe
    files = {"PG_VERSION": b"15\n", "backup_label": b"START WAL LOCATION: 0/2000028\n", "base/1/1259": big}
    assert pg_base.unpack(io.BytesIO(_tar(files)), tmp_path) == 3
    assert (tmp_path / "base/1/1259").read_bytes() == big


def test_a_stream_that_is_not_a_tar_is_refused_with_tars_message(tmp_path):
    with pytest.raises(DamagedError, match="did not unpack: .*tar"):
        pg_base.unpack(io.BytesIO(b"not a tar archive" * 100_000), tmp_path)


def test_a_source_failing_half_way_stops_tar_and_raises_its_error(tmp_path):
    half = _tar({"PG_VERSION": b"15\n", "base/1/1259": b"x" * (6 << 20)})[: 3 << 20]
    before = threading.active_count()
    with pytest.raises(DamagedError, match="frame 7 failed authentication"):
        pg_base.unpack(_FailingAfter(half), tmp_path)
    assert threading.active_count() == before  # the feeder thread ended too
