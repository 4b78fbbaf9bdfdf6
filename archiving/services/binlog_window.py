"""What a MySQL/MariaDB target's binlog archive holds: numbered files, gaps, and the recoverable window.

Binlog files are named ``<base>.<number>`` (binlog.000042) and numbered
without holes by the server, so a number missing between two archived files
is a gap. A full (logical) backup with binlog coordinates can be recovered
from the moment its coordinates were read up to the newest archived event
reached from its file without a gap.
"""

from datetime import datetime

from django.utils.dateparse import parse_datetime

from backups.models import ArchivedLog, Backup, DatabaseTarget, JobStatus


def split_name(name: str) -> tuple[str, int]:
    """Return (base, number) of a binlog file name such as binlog.000042; ValueError if it is not one."""
    base, _, number = name.rpartition(".")
    if not base or not number.isdigit():
        raise ValueError(f"{name!r} is not a binlog file name (BASE.NUMBER)")
    return base, int(number)


def file_name(base: str, number: int) -> str:
    """Return the file name the server gives binlog ``number`` (at least six digits)."""
    return f"{base}.{number:06d}"


def archived(target: DatabaseTarget) -> dict[int, ArchivedLog]:
    """Return the target's archived binlogs by number (one base name: the newest file's)."""
    rows = [row for row in ArchivedLog.objects.filter(target=target, kind="binlog") if _is_binlog(row.name)]
    if not rows:
        return {}
    base = split_name(max(rows, key=lambda row: row.archived_at).name)[0]
    return {split_name(row.name)[1]: row for row in rows if split_name(row.name)[0] == base}


def _is_binlog(name: str) -> bool:
    try:
        split_name(name)
    except ValueError:
        return False
    return True


def gaps(target: DatabaseTarget) -> list[dict]:
    """Return the holes in the archived sequence, and files the archiver found purged before it got them."""
    by_number = archived(target)
    found = []
    numbers = sorted(by_number)
    base = split_name(by_number[numbers[0]].name)[0] if numbers else ""
    for before, after in zip(numbers, numbers[1:]):
        if after > before + 1:
            found.append({"first_missing": file_name(base, before + 1), "last_missing": file_name(base, after - 1)})
    for purged in target.archiver_status.get("purged", []):
        if purged not in found:
            found.append(purged)
    return found


def coordinates(backup: Backup) -> tuple[str, int] | None:
    """Return the (file, position) a backup's dump corresponds to, or None when it cannot start a recovery."""
    meta = backup.engine_meta
    if not meta.get("pitr_possible") or not meta.get("binlog_file"):
        return None
    return meta["binlog_file"], int(meta["binlog_position"])


def snapshot_time(backup: Backup) -> datetime:
    """Return when the backup's binlog coordinates were read: nothing committed later is in its dump."""
    recorded = backup.engine_meta.get("binlog_read_at")
    return (parse_datetime(recorded) if recorded else None) or backup.finished_at or backup.created_at


def pitr_backups(target: DatabaseTarget):
    """Return the completed logical backups of a target that can start a recovery, newest first."""
    rows = Backup.objects.filter(target=target, backup_type="logical", status=JobStatus.COMPLETED)
    return [backup for backup in rows.order_by("-finished_at") if coordinates(backup)]


def run_from(by_number: dict[int, ArchivedLog], first: int) -> list[ArchivedLog]:
    """Return the archived files from number ``first`` on, up to the first hole."""
    files = []
    number = first
    while number in by_number:
        files.append(by_number[number])
        number += 1
    return files


def windows(target: DatabaseTarget) -> list[dict]:
    """Return the recoverable windows of a MySQL/MariaDB target, oldest first.

    Each backup with coordinates is recoverable from its snapshot to the last
    event of the newest file archived without a gap after its coordinates'
    file; backups whose stretches overlap form one window.
    """
    by_number = archived(target)
    found: list[dict] = []
    for backup in reversed(pitr_backups(target)):
        try:
            first = split_name(coordinates(backup)[0])[1]
        except ValueError:
            continue
        files = run_from(by_number, first)
        ends = [row.last_event_at for row in files if row.last_event_at]
        if not ends:
            continue
        start, end = snapshot_time(backup), max(ends)
        if found and start <= found[-1]["to"]:
            if end > found[-1]["to"]:
                found[-1].update(to=end, newest=files[-1].name)
            continue
        found.append({"from": start, "to": max(start, end), "backup": backup.id, "newest": files[-1].name})
    return found


def summary(target: DatabaseTarget) -> dict:
    """Return the binlog part of a target's archive summary: gaps, windows (ISO times), partial live file."""
    by_number = archived(target)
    live = by_number[max(by_number)] if by_number else None
    return {
        "gaps": gaps(target),
        "windows": [{**window, "from": window["from"].isoformat(), "to": window["to"].isoformat()}
                    for window in windows(target)],
        "live_partial": live.name if live is not None and live.partial else None,
    }
