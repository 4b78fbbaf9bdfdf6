"""PostgreSQL WAL file names, LSNs and timeline history files: pure parsing, no I/O.

A segment is named TTTTTTTTXXXXXXXXYYYYYYYY (timeline, then the segment
number split in "log" and "seg" halves, in hex); with the default 16 MiB
segments there are 256 segments per log. History files (TTTTTTTT.history)
list for a timeline its ancestors and the LSN where each one was left.
"""

import re
from dataclasses import dataclass

from covet.errors import UsageError

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
PARTIAL = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$")
HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")
BACKUP_LABEL = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.[0-9A-F]{8}\.backup$")
LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def kind_of(name: str) -> str | None:
    """Return 'segment', 'partial', 'history' or 'backup' for a WAL archive file name, None for anything else."""
    for kind, pattern in (("segment", SEGMENT), ("partial", PARTIAL), ("history", HISTORY), ("backup", BACKUP_LABEL)):
        if pattern.match(name):
            return kind
    return None


def timeline_of(name: str) -> int:
    """Return the timeline a WAL archive file belongs to."""
    if kind_of(name) is None:
        raise UsageError(f"{name!r} is not a PostgreSQL WAL file name")
    return int(name[:8], 16)


def segments_per_log(segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return 0x100000000 // segment_size


def segment_number(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Return the position of a segment (or .partial / .backup file) in its timeline's sequence."""
    match = SEGMENT.match(name[:24])
    if not match:
        raise UsageError(f"{name!r} is not a WAL segment name")
    return int(match.group(2), 16) * segments_per_log(segment_size) + int(match.group(3), 16)


def segment_name(timeline: int, number: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """Return the file name of segment ``number`` on ``timeline``."""
    per_log = segments_per_log(segment_size)
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def parse_lsn(text: str) -> int:
    """Return an LSN such as '0/16B3748' as an integer."""
    match = LSN.match(text.strip())
    if not match:
        raise UsageError(f"{text!r} is not an LSN; write it as PostgreSQL does, e.g. 0/16B3748")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def lsn_segment(lsn: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    """Return the number of the segment that holds ``lsn``."""
    return lsn // segment_size


@dataclass(frozen=True)
class Switch:
    """One line of a history file: ``timeline`` was left at ``lsn`` for a newer one."""

    timeline: int
    lsn: int


def parse_history(text: str) -> list[Switch]:
    """Return the switches a timeline history file lists, oldest first."""
    switches = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        if len(fields) < 2 or not fields[0].isdigit():
            raise UsageError(f"unexpected line in a timeline history file: {line!r}")
        switches.append(Switch(int(fields[0]), parse_lsn(fields[1])))
    return switches


@dataclass(frozen=True)
class Stretch:
    """The part of a recovery path that runs on one timeline: segments ``first`` to ``last`` (None: open)."""

    timeline: int
    first: int
    last: int | None


def recovery_path(start_timeline: int, start_lsn: int, target_timeline: int, switches: list[Switch],
                  segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[Stretch]:
    """Return the stretches of WAL that replay from ``start_lsn`` on ``start_timeline`` to ``target_timeline``.

    ``switches`` is the target timeline's history (empty when the target is
    the start timeline). The start timeline must be on that history.
    """
    first = lsn_segment(start_lsn, segment_size)
    if target_timeline == start_timeline:
        return [Stretch(start_timeline, first, None)]
    ancestors = [switch.timeline for switch in switches]
    if start_timeline not in ancestors:
        raise UsageError(f"timeline {target_timeline} does not descend from timeline {start_timeline} "
                         "of the base backup")
    path = []
    timeline = start_timeline
    for index in range(ancestors.index(start_timeline), len(switches)):
        switch = switches[index]
        if switch.lsn < start_lsn:
            raise UsageError(f"timeline {target_timeline} left timeline {switch.timeline} at "
                             f"{format_lsn(switch.lsn)}, before the base backup starts")
        # The segment holding the switch is read from the newer timeline: its
        # file there starts with the old timeline's records up to the switch,
        # and the old one may only have been archived as a .partial.
        switch_segment = lsn_segment(switch.lsn, segment_size)
        if switch_segment > first:
            path.append(Stretch(timeline, first, switch_segment - 1))
        timeline = switches[index + 1].timeline if index + 1 < len(switches) else target_timeline
        first = switch_segment
    path.append(Stretch(target_timeline, first, None))
    return path
