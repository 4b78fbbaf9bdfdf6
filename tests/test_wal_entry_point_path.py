"""Servers set up before archiving/ existed run backups/shipper/covet_wal.py: it still works as the entry point."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OLD = REPO / "backups" / "shipper" / "covet_wal.py"
NEW = REPO / "archiving" / "covet_wal.py"


def run(entry_point: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-S", str(entry_point), *args], capture_output=True, text=True)


def test_the_old_path_fetches_from_a_spool_as_the_entry_point_does(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "000000010000000000000002").write_bytes(b"segment")
    for entry_point in (OLD, NEW):
        copied = tmp_path / f"{entry_point.parent.name}.out"
        done = run(entry_point, "fetch", "--spool", str(spool), "000000010000000000000002", str(copied))
        assert done.returncode == 0, done.stderr
        assert copied.read_bytes() == b"segment"
        absent = run(entry_point, "fetch", "--spool", str(spool), "000000010000000000000003", str(copied) + "x")
        assert (absent.returncode, absent.stdout) == (1, "")


def test_the_old_path_refuses_a_bad_call_like_the_entry_point(tmp_path):
    old, new = run(OLD, "bogus"), run(NEW, "bogus")
    assert old.returncode == new.returncode == 2
    assert old.stderr == new.stderr and "usage" in old.stderr
