"""What a target's archive covers: continuous WAL ranges, gaps, recoverable windows, base backups' WAL."""

import logging
import time

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from archiving.services import binlog_window
from backups.models import ArchivedLog, Backup, DatabaseTarget, JobStatus
from covet.engines import pg_wal

log = logging.getLogger(__name__)

# A base backup's last segment usually arrives within a second of its end; the
# catalog query is cheap, so look often rather than add half a second per backup.
BASE_WAL_POLL = 0.1


# What the archive holds: continuous ranges, gaps, the recoverable window --------------------------


def wal_ranges(target: DatabaseTarget) -> dict[int, list[tuple[int, int]]]:
    """Return, per timeline, the continuous runs of archived WAL segments as (first, last) numbers."""
    numbers: dict[int, list[int]] = {}
    for name, timeline in ArchivedLog.objects.filter(target=target, kind="wal").values_list("name", "timeline"):
        if pg_wal.kind_of(name) == "segment":
            numbers.setdefault(timeline, []).append(pg_wal.segment_number(name))
    return {timeline: _runs(sorted(values)) for timeline, values in sorted(numbers.items())}


def _runs(values: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def wal_gaps(target: DatabaseTarget) -> list[dict]:
    """Return the holes between archived segments of each timeline, as first and last missing names."""
    gaps = []
    for timeline, runs in wal_ranges(target).items():
        for (_, before), (after, _) in zip(runs, runs[1:]):
            gaps.append({"timeline": timeline, "first_missing": pg_wal.segment_name(timeline, before + 1),
                         "last_missing": pg_wal.segment_name(timeline, after - 1)})
    return gaps


def wal_window(target: DatabaseTarget) -> list[dict]:
    """Return the recoverable windows of a PostgreSQL target, oldest first.

    Each usable base backup can be recovered from its end (its stop time) up
    to the newest segment archived without a gap after its start on its
    timeline; backups whose stretches overlap form one window.
    """
    refresh_usable(target)
    ranges = wal_ranges(target)
    times = dict(ArchivedLog.objects.filter(target=target, kind="wal").values_list("name", "archived_at"))
    windows = []
    bases = Backup.objects.filter(target=target, backup_type="base", status=JobStatus.COMPLETED, usable=True)
    for base in bases.order_by("finished_at"):
        meta = base.engine_meta
        if "start_lsn" not in meta or "timeline" not in meta:
            continue
        timeline, first = meta["timeline"], pg_wal.lsn_segment(pg_wal.parse_lsn(meta["start_lsn"]))
        run = next(((a, b) for a, b in ranges.get(timeline, []) if a <= first <= b), None)
        if run is None:
            continue
        newest = pg_wal.segment_name(timeline, run[1])
        start, end = parse_datetime(meta.get("stop_time") or "") or base.finished_at, times.get(newest)
        if windows and start <= windows[-1]["to"]:
            if end > windows[-1]["to"]:
                windows[-1].update(to=end, newest=newest)
            continue
        windows.append({"from": start, "to": end, "backup": base.id, "timeline": timeline,
                        "newest": newest})
    return windows


def archive_summary(target: DatabaseTarget) -> dict:
    """Return what the API and dashboard show about a target's archive: newest file, lag, gaps, windows."""
    rows = ArchivedLog.objects.filter(target=target)
    newest = rows.order_by("-archived_at").first()
    summary = {
        "pitr_enabled": target.pitr_enabled,
        "archived_files": rows.count(),
        "newest": newest.name if newest else None,
        "newest_archived_at": newest.archived_at.isoformat() if newest else None,
        "lag_seconds": round((timezone.now() - newest.archived_at).total_seconds(), 1) if newest else None,
        "archiver": target.archiver_status,
    }
    if target.engine == "postgresql":
        summary["gaps"] = wal_gaps(target)
        summary["windows"] = [{**w, "from": w["from"].isoformat(), "to": w["to"].isoformat()}
                              for w in wal_window(target)]
    elif target.engine == "mysql":
        summary.update(binlog_window.summary(target))
    return summary


# Base backups become usable once their WAL is archived --------------------------------------------


def base_wal_segments(backup) -> tuple[int, list[str]]:
    """Return the timeline and the segment names a base backup needs from its start to its end."""
    meta = backup.engine_meta
    start = pg_wal.lsn_segment(pg_wal.parse_lsn(meta["start_lsn"]))
    end = max(start, pg_wal.lsn_segment(pg_wal.parse_lsn(meta["end_lsn"]) - 1))
    timeline = meta["timeline"]
    return timeline, [pg_wal.segment_name(timeline, number) for number in range(start, end + 1)]


def missing_base_wal(backup) -> list[str]:
    """Return the segments between a base backup's start and end that the archive does not hold yet."""
    timeline, names = base_wal_segments(backup)
    archived = set(ArchivedLog.objects.filter(target=backup.target, kind="wal", timeline=timeline,
                                              name__in=names).values_list("name", flat=True))
    return [name for name in names if name not in archived]


def refresh_usable(target: DatabaseTarget) -> list[str]:
    """Mark usable the completed base backups of a target whose WAL has all arrived; return their ids."""
    became = []
    waiting = Backup.objects.filter(target=target, backup_type="base", status=JobStatus.COMPLETED, usable=False)
    for backup in waiting:
        if "end_lsn" in backup.engine_meta and not missing_base_wal(backup):
            Backup.objects.filter(pk=backup.pk).update(usable=True)
            became.append(backup.id)
    return became


def await_base_wal(backup, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for a new base backup's WAL to reach the archive; mark it usable then."""
    deadline = time.monotonic() + timeout
    while True:
        if not missing_base_wal(backup):
            backup.usable = True
            type(backup).objects.filter(pk=backup.pk).update(usable=True)
            return True
        if time.monotonic() >= deadline:
            log.warning("base backup %s: WAL %s not archived yet; it becomes usable when it is",
                        backup.id, ", ".join(missing_base_wal(backup)))
            return False
        time.sleep(BASE_WAL_POLL)
