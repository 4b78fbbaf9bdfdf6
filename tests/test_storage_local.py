"""Local storage: atomic 0600 writes, listing, partial clean-up, and keys that cannot escape the root."""

import io
import stat

import pytest

from backups.errors import NotFoundError, UsageError
from backups.storage import object_key, open_storage


@pytest.fixture
def store(tmp_path):
    return open_storage("local", {"root": str(tmp_path / "store")})


def test_it_round_trips_objects_of_every_size(store):
    for size in (0, 1, 4 * 1024 * 1024, 4 * 1024 * 1024 + 1):
        data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        info = store.put(f"a/b/{size}.bin", io.BytesIO(data))
        assert info.size == size
        assert store.get_bytes(f"a/b/{size}.bin") == data
        assert store.stat(f"a/b/{size}.bin").size == size


def test_it_writes_files_readable_only_by_the_owner(store):
    store.put_bytes("x/secret.covet", b"data")
    mode = stat.S_IMODE((store.root / "x" / "secret.covet").stat().st_mode)
    assert mode == 0o600


def test_it_leaves_nothing_when_the_stream_fails(store):
    class Exploding(io.RawIOBase):
        calls = 0

        def read(self, n=-1):
            self.calls += 1
            if self.calls > 2:
                raise RuntimeError("source died")
            return b"y" * 1000

    with pytest.raises(RuntimeError):
        store.put("p/q.covet", Exploding())
    assert list(store.root.rglob("*")) == [store.root / "p"]
    with pytest.raises(NotFoundError):
        store.stat("p/q.covet")


def test_abort_removes_a_partial_left_by_a_killed_writer(store):
    (store.root / "p").mkdir(parents=True)
    partial = store.root / "p" / ".q.covet.partial"
    partial.write_bytes(b"half")
    assert [o.key for o in store.list("p/")] == []
    store.abort("p/q.covet")
    assert not partial.exists()


def test_it_lists_by_prefix_in_key_order(store):
    for key in ("b/2", "a/1", "a/0", "c"):
        store.put_bytes(key, b"1")
    assert [o.key for o in store.list("a/")] == ["a/0", "a/1"]


def test_missing_objects_are_not_found(store):
    with pytest.raises(NotFoundError, match="missing"):
        store.get("nope")


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "a//b", "a/\x00b", ""])
def test_it_refuses_keys_that_could_escape_the_root(store, key):
    with pytest.raises(UsageError):
        store.put_bytes(key, b"x")


def test_object_key_sanitises_names_into_single_components():
    assert object_key("sqlite", "../../etc", "my db", "x\ny") == "sqlite/.._.._etc/my_db/x_y"
    with pytest.raises(UsageError):
        object_key("..")
