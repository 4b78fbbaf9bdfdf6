"""Contract tests every storage backend must pass, written once (like Django's session backend tests).

A backend's test module subclasses ``StorageContract`` and provides a ``store``
fixture returning a fresh, empty backend. Nothing here knows which backend it
is talking to.
"""

import io
import os

import pytest

from covet.errors import NotFoundError, UsageError

MiB = 1024 * 1024


def payload(size: int) -> bytes:
    """Deterministic, not-all-zero bytes of ``size``."""
    block = os.urandom(64 * 1024)
    return (block * (size // len(block) + 1))[:size]


class Exploding(io.RawIOBase):
    """A source that fails after ``after`` bytes, as a dump tool dying mid-stream would."""

    def __init__(self, after: int):
        self.after = after
        self.sent = 0

    def readable(self):
        return True

    def read(self, n=-1):
        if self.sent >= self.after:
            raise RuntimeError("source died half way")
        n = min(n if n and n > 0 else MiB, self.after - self.sent)
        self.sent += n
        return b"z" * n


class Watched(io.RawIOBase):
    """``size`` bytes of payload that call ``then()`` once, when more than ``after`` bytes have been read."""

    def __init__(self, size: int, after: int, then):
        self.data = io.BytesIO(payload(size))
        self.after, self.then, self.called = after, then, False

    def readable(self):
        return True

    def read(self, n=-1):
        if not self.called and self.data.tell() > self.after:
            self.called = True
            self.then()
        return self.data.read(n if n and n > 0 else MiB)


class StorageContract:
    """Behaviour shared by every backend.

    Subclasses set ``part_size`` to the backend's upload unit and
    ``knows_free_space`` when the backend can tell how much room is left.
    """

    part_size = 8 * MiB
    knows_free_space = False

    def sizes(self):
        return [0, 1, self.part_size, 2 * self.part_size + 1]

    def test_it_round_trips_objects_around_part_sizes(self, store):
        for size in self.sizes():
            data = payload(size)
            info = store.put(f"rt/{size}.bin", io.BytesIO(data), size_hint=size)
            assert info.size == size
            assert store.stat(f"rt/{size}.bin").size == size
            with store.get(f"rt/{size}.bin") as stream:
                got = b"".join(iter(lambda: stream.read(1024 * 1024 + 7), b""))
            assert got == data, size

    def test_a_failed_upload_leaves_no_object(self, store):
        with pytest.raises(RuntimeError, match="half way"):
            store.put("fail/x.covet", Exploding(self.part_size + 3), size_hint=10 * self.part_size)
        assert [o.key for o in store.list("fail/")] == []
        with pytest.raises(NotFoundError):
            store.stat("fail/x.covet")
        with pytest.raises(NotFoundError):
            store.get("fail/x.covet")
        store.abort("fail/x.covet")  # idempotent clean-up after a killed writer

    def test_an_object_is_invisible_until_its_put_completes(self, store):
        store.put_bytes("slow/done.covet", b"complete")
        seen = []

        def look():
            try:
                store.stat("slow/x.covet")
                found = "stat found it"
            except NotFoundError:
                found = "not found"
            seen.append(([o.key for o in store.list("slow/")], found))

        size = 2 * self.part_size + 5
        store.put("slow/x.covet", Watched(size, after=self.part_size + 1, then=look), size_hint=size)
        assert seen == [(["slow/done.covet"], "not found")]
        assert [o.key for o in store.list("slow/")] == ["slow/done.covet", "slow/x.covet"]
        assert store.stat("slow/x.covet").size == size

    def test_it_lists_complete_objects_by_prefix_in_key_order(self, store):
        for key in ("b/2", "a/1", "a/0", "ab/3", "c"):
            store.put_bytes(key, b"1")
        assert [o.key for o in store.list("a/")] == ["a/0", "a/1"]
        assert [o.key for o in store.list("")] == ["a/0", "a/1", "ab/3", "b/2", "c"]

    def test_delete_removes_and_tolerates_missing(self, store):
        store.put_bytes("d/x", b"1")
        store.delete("d/x")
        store.delete("d/x")
        with pytest.raises(NotFoundError):
            store.get("d/x")

    def test_missing_objects_are_not_found(self, store):
        with pytest.raises(NotFoundError):
            store.get("nope/none")
        with pytest.raises(NotFoundError):
            store.stat("nope/none")

    @pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "a//b", "a/\x00b", "", "a/./b"])
    def test_it_refuses_keys_that_could_escape_its_prefix(self, store, key):
        with pytest.raises(UsageError):
            store.put_bytes(key, b"x")

    def test_an_unknown_tier_is_a_usage_error(self, store):
        with pytest.raises(UsageError):
            store.check_tier("no-such-tier")

    def test_free_space_is_reported_only_where_the_backend_can_tell(self, store):
        free = store.free_bytes()
        if self.knows_free_space:
            assert isinstance(free, int) and free > 0
        else:
            assert free is None

    def test_describe_names_the_object(self, store):
        store.put_bytes("where/x.covet", b"1")
        assert "where/x.covet" in store.describe("where/x.covet")
