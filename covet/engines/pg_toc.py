"""The table of contents of a pg_dump archive, read exactly, and the entries a table-level restore needs.

``pg_restore -l`` prints the TOC as text, but it neither quotes names (a
table called "a b" is indistinguishable from schema "a", table "b") nor shows
the dependencies between entries. Reading the binary TOC gives both, so
``select_tables`` can pick the entries of exactly the named tables and hand
their dump ids to ``pg_restore -L``. The layout read here is that of
pg_backup_archiver.c (ReadHead, ReadToc), archive versions 1.12 to 1.16
(PostgreSQL 9.6 to 17).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from covet.errors import DamagedError, UsageError

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
FORMAT_TAR = 3  # what a directory dump's toc.dat says (pg_backup_directory.c writes it so)
FORMAT_DIRECTORY = 5
OLDEST_VERSION = (1, 12)
NEWEST_VERSION = (1, 16)

# Entries that describe a relation (whose data and parts are selected by name).
RELATION_KINDS = {"TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "TABLE DATA", "MATERIALIZED VIEW DATA",
                  "TABLE ATTACH"}
# Entries that are parts of one table: kept with their table when every table they touch is restored.
TABLE_PARTS = {"TABLE DATA", "DEFAULT", "CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT", "INDEX", "INDEX ATTACH",
               "TRIGGER", "RULE", "POLICY", "ROW SECURITY", "COMMENT", "SECURITY LABEL", "ACL", "STATISTICS",
               "SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET"}
# Entries never pulled in as a dependency: they are other tables' data or whole-database items.
NEVER_DEPENDENCY = RELATION_KINDS | {"BLOB", "BLOBS", "BLOB METADATA", "DATABASE", "DATABASE PROPERTIES",
                                     "ENCODING", "STDSTRINGS", "SEARCHPATH", "PUBLICATION", "PUBLICATION TABLE",
                                     "SUBSCRIPTION", "EVENT TRIGGER"}


@dataclass
class TocEntry:
    """One archive item: its dump id, kind ("TABLE", "INDEX" ...), schema, name and the dump ids it depends on."""

    dump_id: int
    desc: str
    namespace: str
    tag: str
    owner: str
    deps: list[int] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.namespace}.{self.tag}" if self.namespace else self.tag


@dataclass
class Toc:
    """A whole table of contents, in archive order (which is also restore order)."""

    version: tuple[int, int, int]
    format: int
    entries: list[TocEntry]

    def tables(self) -> list[str]:
        """Return the "schema.name" of every table the archive holds."""
        return sorted(e.qualified for e in self.entries if e.desc == "TABLE")


class _Reader:
    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.int_size = 4
        self.off_size = 8

    def bytes(self, count: int) -> bytes:
        data = self.stream.read(count)
        if len(data) != count:
            raise DamagedError("the dump's table of contents ends early; the archive is truncated")
        return data

    def byte(self) -> int:
        return self.bytes(1)[0]

    def int(self) -> int:
        # A sign byte, then int_size bytes, least significant first.
        sign = self.byte()
        raw = self.bytes(self.int_size)
        value = int.from_bytes(raw, "little")
        return -value if sign else value

    def str(self) -> str | None:
        length = self.int()
        if length < 0:
            return None
        return self.bytes(length).decode("utf-8", errors="replace")


def read_toc(stream: BinaryIO) -> Toc:
    """Read the header and table of contents of a custom-format archive or a directory's toc.dat."""
    reader = _Reader(stream)
    if reader.stream.read(len(MAGIC)) != MAGIC:
        raise DamagedError("the dump is not a pg_dump archive (no PGDMP header)")
    version = (reader.byte(), reader.byte(), reader.byte())
    if not OLDEST_VERSION <= version[:2] <= NEWEST_VERSION:
        raise UsageError(f"pg_dump archive version {version[0]}.{version[1]} is not one this engine can read for "
                         f"a table-level restore ({OLDEST_VERSION[0]}.{OLDEST_VERSION[1]} to "
                         f"{NEWEST_VERSION[0]}.{NEWEST_VERSION[1]}); restore the whole database instead")
    at_least = version[:2].__ge__
    reader.int_size = reader.byte()
    reader.off_size = reader.byte()
    archive_format = reader.byte()
    if at_least((1, 15)):
        reader.byte()  # compression algorithm
    else:
        reader.int()  # compression level
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        reader.int()
    reader.str()  # database name
    reader.str()  # server version
    reader.str()  # pg_dump version
    entries = []
    for _ in range(reader.int()):
        dump_id = reader.int()
        reader.int()  # had dumper
        reader.str()  # table oid
        reader.str()  # oid
        tag = reader.str() or ""
        desc = reader.str() or ""
        reader.int()  # section
        reader.str()  # definition
        reader.str()  # drop statement
        reader.str()  # copy statement
        namespace = reader.str() or ""
        reader.str()  # tablespace
        if at_least((1, 14)):
            reader.str()  # table access method
        if at_least((1, 16)):
            reader.int()  # relkind
        owner = reader.str() or ""
        reader.str()  # "with oids", always false now
        deps = []
        while (dep := reader.str()) is not None:
            deps.append(int(dep))
        if archive_format == FORMAT_CUSTOM:
            reader.byte()  # data state
            reader.bytes(reader.off_size)  # data offset
        elif archive_format in (FORMAT_DIRECTORY, FORMAT_TAR):
            reader.str()  # data file name
        else:
            raise UsageError(f"pg_dump archive format {archive_format} is not custom or directory")
        entries.append(TocEntry(dump_id, desc, namespace, tag, owner, deps))
    return Toc(version, archive_format, entries)


def read_toc_file(path: Path) -> Toc:
    """Read the TOC of a custom-format file or of a directory-format dump's toc.dat."""
    if path.is_dir():
        path = path / "toc.dat"
    with open(path, "rb") as handle:
        return read_toc(handle)


@dataclass
class Selection:
    """What a table-level restore restores: dump ids in archive order, and what it left out and why."""

    dump_ids: list[int]
    tables: list[str]
    dependencies: list[str]
    skipped: list[str]


def select_tables(toc: Toc, wanted: tuple[str, ...]) -> Selection:
    """Return the entries that restore exactly the tables ``wanted`` ("schema.name"), with what they need.

    Kept: each table, its data and every part of it (defaults, constraints,
    indexes, triggers, comments, privileges, owned sequences) whose other
    tables are restored too; plus the schemas, functions and types these
    depend on. A foreign key to a table not restored is skipped and listed.
    Raise UsageError naming the archive's tables when one is unknown.
    """
    by_id = {e.dump_id: e for e in toc.entries}
    tables = {e.qualified: e for e in toc.entries if e.desc == "TABLE"}
    unknown = [name for name in wanted if name not in tables]
    if unknown:
        held = ", ".join(toc.tables()) or "none"
        raise UsageError(f"the backup holds no table {', '.join(unknown)}; tables in it: {held}")
    chosen = {tables[name].dump_id for name in wanted}

    owner_cache: dict[int, set[int]] = {}

    def owners(entry_id: int, trail: frozenset = frozenset()) -> set[int]:
        # The relation entries an entry belongs to, followed through parts of parts
        # (an FK depends on the referenced table's primary key constraint).
        if entry_id in owner_cache:
            return owner_cache[entry_id]
        entry = by_id.get(entry_id)
        found: set[int] = set()
        if entry is None or entry_id in trail:
            return found
        if entry.desc in RELATION_KINDS - {"TABLE DATA", "MATERIALIZED VIEW DATA", "TABLE ATTACH"}:
            found = {entry_id}
        elif entry.desc in TABLE_PARTS:
            for dep in entry.deps:
                found |= owners(dep, trail | {entry_id})
        owner_cache[entry_id] = found
        return found

    kept: set[int] = set(chosen)
    skipped = []
    for entry in toc.entries:
        if entry.desc not in TABLE_PARTS or entry.dump_id in kept:
            continue
        related = owners(entry.dump_id)
        if not related & chosen:
            continue
        if related <= chosen:
            kept.add(entry.dump_id)
        else:
            others = sorted(by_id[r].qualified for r in related - chosen)
            skipped.append(f"{entry.desc} {entry.qualified} (needs {', '.join(others)})")

    # Everything the kept entries depend on that is not another relation: schemas, functions, types ...
    dependencies: set[int] = set()
    pending = [dep for entry_id in kept for dep in by_id[entry_id].deps]
    while pending:
        dep = pending.pop()
        entry = by_id.get(dep)
        if entry is None or dep in kept or dep in dependencies:
            continue
        if entry.desc in NEVER_DEPENDENCY or owners(dep) - chosen:
            continue
        dependencies.add(dep)
        pending.extend(entry.deps)
    # A comment or privilege on a pulled-in schema or function comes along with it.
    for entry in toc.entries:
        if entry.desc in ("COMMENT", "ACL", "SECURITY LABEL") and entry.deps \
                and set(entry.deps) <= (dependencies | kept) and entry.dump_id not in kept:
            dependencies.add(entry.dump_id)

    selected = kept | dependencies
    return Selection(
        dump_ids=[e.dump_id for e in toc.entries if e.dump_id in selected],
        tables=sorted(wanted),
        dependencies=[f"{by_id[d].desc} {by_id[d].qualified}" for d in sorted(dependencies)],
        skipped=skipped,
    )


def list_file(selection: Selection) -> str:
    """Return a ``pg_restore -L`` list: one dump id a line, in archive order (pg_restore ignores the rest)."""
    return "".join(f"{dump_id}\n" for dump_id in selection.dump_ids)
