"""Local storage: the storage contract, plus 0600 files, partial clean-up and key sanitising."""

import stat

import pytest

from covet.errors import StorageError, UsageError
from covet.storage import object_key, open_storage
from covet.streams import COPY_BUFFER

from tests.storage_contract import StorageContract


@pytest.fixture
def store(tmp_path):
    return open_storage("local", {"root": str(tmp_path / "store")})


class TestLocalStorageContract(StorageContract):
    part_size = COPY_BUFFER
    knows_free_space = True


def test_it_writes_files_readable_only_by_the_owner(store):
    store.put_bytes("x/secret.covet", b"data")
    mode = stat.S_IMODE((store.root / "x" / "secret.covet").stat().st_mode)
    assert mode == 0o600


def test_abort_removes_a_partial_left_by_a_killed_writer(store):
    (store.root / "p").mkdir(parents=True)
    partial = store.root / "p" / ".q.covet.partial"
    partial.write_bytes(b"half")
    assert [o.key for o in store.list("p/")] == []
    store.abort("p/q.covet")
    assert not partial.exists()


def test_object_key_sanitises_names_into_single_components():
    assert object_key("sqlite", "../../etc", "my db", "x\ny") == "sqlite/.._.._etc/my_db/x_y"
    with pytest.raises(UsageError):
        object_key("..")


def test_an_unwritable_root_is_a_storage_error_and_cleanup_does_not_fail(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = open_storage("local", {"root": str(blocker / "sub")})
    with pytest.raises(StorageError, match="cannot write"):
        store.put_bytes("a/b.covet", b"x")
    store.abort("a/b.covet")
    store.delete("a/b.covet")
