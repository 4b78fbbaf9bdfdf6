"""Reading MySQL/MariaDB binary log files: event headers, transactions, and the few event bodies Covet needs.

A binlog file is the magic ``\\xfebin`` followed by events. Every event starts
with a fixed 19-byte header: timestamp (4), type (1), server id (4), event size
(4), position after the event (4), flags (2), all little-endian. From the
header alone we get positions and times; the bodies of a handful of events
(format description, GTID, query, table map) give checksums, GTIDs, the
statement text and the schema a row event writes to.

A transaction (a "group") starts at a GTID event (MariaDB's GTID, MySQL's
GTID or anonymous GTID) and runs to the next one, because the server writes
each committed transaction as one contiguous run of events.

No Django here: the archiver and the recovery both use it on plain files.
"""

import mmap
import re
import struct
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from covet.errors import BinlogFormatError

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")
FIRST_EVENT = len(MAGIC)

STOP_EVENT = 3
ROTATE_EVENT = 4
QUERY_EVENT = 2
FORMAT_DESCRIPTION_EVENT = 15
XID_EVENT = 16
TABLE_MAP_EVENT = 19
MYSQL_GTID_EVENT = 33
MYSQL_ANONYMOUS_GTID_EVENT = 34
MARIADB_GTID_EVENT = 162
MARIADB_QUERY_COMPRESSED_EVENT = 165
GROUP_STARTS = {MARIADB_GTID_EVENT, MYSQL_GTID_EVENT, MYSQL_ANONYMOUS_GTID_EVENT}
QUERY_EVENTS = {QUERY_EVENT, MARIADB_QUERY_COMPRESSED_EVENT}
# Row events of every version: MySQL v1 (23-25) and v2 (30-32, 39), MariaDB compressed (166-171).
ROW_EVENTS = {23, 24, 25, 30, 31, 32, 39, 166, 167, 168, 169, 170, 171}
# Transaction control carries no change of its own.
CONTROL_STATEMENTS = re.compile(rb"^\s*(BEGIN|COMMIT|ROLLBACK|XA\s+\w+|SAVEPOINT\b|RELEASE\s+SAVEPOINT\b)", re.I)
CHECKSUM_SIZE = 4



@dataclass
class Event:
    """One event: where it starts and ends in its file, when it was written, and its kind."""

    position: int
    end: int
    timestamp: int
    type: int
    server_id: int
    body: memoryview | None = None  # without header and checksum; set only for the kinds that are decoded


@dataclass
class Statement:
    """A statement as the binlog keeps it (statement-format DML, and all DDL)."""

    position: int
    database: str
    text: str


@dataclass
class Group:
    """One transaction: from its GTID event to the next, with what a replay needs to know about it."""

    position: int
    end: int = 0
    gtid: str = ""
    timestamp: int = 0  # the latest event time in it: its commit, to the second
    row_events: list[tuple[int, str]] = field(default_factory=list)  # (position, schema written to)
    statements: list[Statement] = field(default_factory=list)

    def events_for(self, database: str) -> int:
        """Return how many of its events change ``database`` (rows, or statements run with it as default)."""
        return (sum(1 for _, schema in self.row_events if schema == database)
                + sum(1 for statement in self.statements if statement.database == database))


@dataclass
class FileSummary:
    """What the catalog records about one binlog file."""

    start_position: int
    end_position: int  # after the last whole event: a live file may end inside one
    first_event_at: datetime | None
    last_event_at: datetime | None
    gtid_range: str
    closed: bool  # ends with a rotate or stop event: the server has finished it
    events: int


def _time(stamp: int) -> datetime | None:
    return datetime.fromtimestamp(stamp, tz=timezone.utc) if stamp else None


class BinlogFile:
    """An open binlog file, read through mmap; use as a context manager."""

    def __init__(self, path: Path, limit: int | None = None):
        self.path = Path(path)
        self._file = open(self.path, "rb")
        size = self.path.stat().st_size if limit is None else limit
        self.size = size
        self._map = mmap.mmap(self._file.fileno(), size, access=mmap.ACCESS_READ) if size else b""
        if self._map[:FIRST_EVENT] != MAGIC:
            self.close()
            raise BinlogFormatError(f"{self.path.name} is not a binary log (no \\xfebin magic)")
        self.checksum = 0
        self.post_header: bytes = b""
        self.table_id_size = 6

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()
        self._file.close()

    def __enter__(self) -> "BinlogFile":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def events(self, start: int = FIRST_EVENT, decode: bool = False) -> Iterator[Event]:
        """Yield the whole events of the file from ``start`` (format description always read first).

        With ``decode`` the bodies of GTID, query and table-map events are
        attached. A torn last event (a live file) ends the iteration.
        """
        position = FIRST_EVENT
        while position + HEADER.size <= self.size:
            timestamp, kind, server_id, size, _next, _flags = HEADER.unpack_from(self._map, position)
            end = position + size
            if size < HEADER.size:
                raise BinlogFormatError(f"{self.path.name}: malformed event at position {position}")
            if end > self.size:
                return
            if kind == FORMAT_DESCRIPTION_EVENT:
                self._format_description(position, end)
            if position >= start or kind == FORMAT_DESCRIPTION_EVENT:
                body = None
                if decode and (kind in GROUP_STARTS or kind in QUERY_EVENTS or kind == TABLE_MAP_EVENT):
                    body = memoryview(self._map)[position + HEADER.size:end - self.checksum]
                if position >= start:
                    yield Event(position, end, timestamp, kind, server_id, body)
            position = end

    def _format_description(self, position: int, end: int) -> None:
        body = self._map[position + HEADER.size:end]
        version = body[2:52].split(b"\0", 1)[0].decode(errors="replace")
        # Servers since MySQL 5.6.1 / MariaDB 5.3 end the description with the
        # checksum algorithm (1 byte) and its own CRC32 (4 bytes).
        numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:3])
        has_algorithm = "mariadb" in version.lower() or numbers >= (5, 6, 1)
        algorithm = body[-CHECKSUM_SIZE - 1] if has_algorithm else 0
        self.checksum = CHECKSUM_SIZE if algorithm == 1 else 0
        header_length = body[56]
        if header_length != HEADER.size:
            raise BinlogFormatError(f"{self.path.name}: event headers of {header_length} bytes are not supported")
        self.post_header = bytes(body[57:len(body) - (CHECKSUM_SIZE + 1 if has_algorithm else 0)])
        self.table_id_size = 4 if self._post_header_length(TABLE_MAP_EVENT, 8) == 6 else 6

    def _post_header_length(self, kind: int, default: int) -> int:
        return self.post_header[kind - 1] if 0 < kind <= len(self.post_header) else default

    # Bodies -------------------------------------------------------------------

    def gtid(self, event: Event) -> str:
        """Return the GTID an event starts: 'domain-server-seq' (MariaDB) or 'uuid:gno' (MySQL), '' if anonymous."""
        body = event.body
        if event.type == MARIADB_GTID_EVENT:
            seq_no, domain = struct.unpack_from("<QI", body, 0)
            return f"{domain}-{event.server_id}-{seq_no}"
        if event.type == MYSQL_GTID_EVENT:
            sid = bytes(body[1:17]).hex()
            gno = struct.unpack_from("<Q", body, 17)[0]
            return f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}:{gno}"
        return ""

    def statement(self, event: Event) -> Statement:
        """Decode a query event: its default schema and statement text."""
        body = event.body
        post = self._post_header_length(event.type, 13)
        db_length = body[8]
        status_length = struct.unpack_from("<H", body, 11)[0]
        db_start = post + status_length
        database = bytes(body[db_start:db_start + db_length]).decode(errors="replace")
        text = bytes(body[db_start + db_length + 1:])
        if event.type == MARIADB_QUERY_COMPRESSED_EVENT:
            text = _uncompress(text)
        return Statement(event.position, database, text.decode(errors="replace"))

    def table_map(self, event: Event) -> tuple[int, str]:
        """Decode a table-map event: (table id, schema)."""
        body = event.body
        table_id = int.from_bytes(body[:self.table_id_size], "little")
        post = self._post_header_length(TABLE_MAP_EVENT, 8)
        db_length = body[post]
        return table_id, bytes(body[post + 1:post + 1 + db_length]).decode(errors="replace")

    def row_table_id(self, position: int) -> int:
        start = position + HEADER.size
        return int.from_bytes(self._map[start:start + self.table_id_size], "little")

    # Whole-file views ---------------------------------------------------------

    def summary(self) -> FileSummary:
        """Return positions, event times, GTID range and whether the file is closed, from its headers."""
        first = last = end = events = 0
        last_type = None
        gtids = _GtidRange()
        for event in self.events(decode=True):
            events += 1
            if event.timestamp:
                first = first or event.timestamp
                last = max(last, event.timestamp)
            if event.type in GROUP_STARTS:
                gtids.add(self.gtid(event))
            end, last_type = event.end, event.type
        return FileSummary(start_position=FIRST_EVENT, end_position=end or FIRST_EVENT,
                           first_event_at=_time(first), last_event_at=_time(last), gtid_range=gtids.text(),
                           closed=last_type in (ROTATE_EVENT, STOP_EVENT), events=events)

    def groups(self, start: int = FIRST_EVENT) -> Iterator[Group]:
        """Yield the transactions that start at or after ``start``, with their rows and statements."""
        group: Group | None = None
        tables: dict[int, str] = {}
        for event in self.events(start, decode=True):
            if event.type in GROUP_STARTS:
                if group is not None:
                    yield group
                group = Group(event.position, gtid=self.gtid(event))
                tables = {}
            if group is None:
                continue  # the file's preamble: format description, GTID list, checkpoints
            if event.type in (ROTATE_EVENT, STOP_EVENT):
                yield group
                group = None
                continue
            group.end = event.end
            group.timestamp = max(group.timestamp, event.timestamp)
            if event.type == TABLE_MAP_EVENT:
                table_id, schema = self.table_map(event)
                tables[table_id] = schema
            elif event.type in ROW_EVENTS:
                group.row_events.append((event.position, tables.get(self.row_table_id(event.position), "")))
            elif event.type in QUERY_EVENTS:
                statement = self.statement(event)
                if not CONTROL_STATEMENTS.match(statement.text.encode()):
                    group.statements.append(statement)
        if group is not None:
            yield group


def _uncompress(data: bytes) -> bytes:
    # MariaDB's compressed events: one byte whose low 3 bits give the width of
    # the big-endian uncompressed length that follows, then a zlib stream.
    width = data[0] & 0x07
    return zlib.decompress(data[1 + width:])


class _GtidRange:
    """First and last GTID per replication domain (MariaDB) or source UUID (MySQL)."""

    def __init__(self):
        self.ranges: dict[str, list[str]] = {}

    def add(self, gtid: str) -> None:
        if not gtid:
            return
        key = gtid.split(":")[0] if ":" in gtid else gtid.split("-")[0]
        self.ranges.setdefault(key, [gtid, gtid])[1] = gtid

    def text(self) -> str:
        parts = []
        for key, (first, last) in self.ranges.items():
            if ":" in first:  # MySQL's own notation: uuid:first-last
                parts.append(f"{key}:{first.split(':')[1]}-{last.split(':')[1]}")
            else:
                parts.append(f"{first}..{last}")
        return ",".join(parts)


def gtid_in_range(gtid: str, gtid_range: str) -> bool:
    """Say whether ``gtid`` lies between the first and last GTID of its domain/source in ``gtid_range``."""
    if ":" in gtid:
        source, _, number = gtid.rpartition(":")
        for part in filter(None, gtid_range.split(",")):
            name, _, span = part.rpartition(":")
            first, _, last = span.partition("-")
            if name == source and int(first) <= int(number) <= int(last or first):
                return True
        return False
    domain, _, seq = gtid.split("-", 2)
    for part in filter(None, gtid_range.split(",")):
        first, _, last = part.partition("..")
        if first.split("-")[0] == domain and int(first.split("-")[2]) <= int(seq) <= int(last.split("-")[2]):
            return True
    return False


def parse_gtid(text: str) -> str:
    """Return a GTID in canonical form; raise ValueError for anything that is not one GTID."""
    text = text.strip()
    if re.fullmatch(r"\d+-\d+-\d+", text):
        return "-".join(str(int(part)) for part in text.split("-"))
    match = re.fullmatch(r"([0-9a-fA-F-]{36}):(\d+)", text)
    if match:
        return f"{match.group(1).lower()}:{int(match.group(2))}"
    raise ValueError(text)
