"""What ``manage.py setup_pitr`` does for a MySQL/MariaDB target: check the server, then turn archiving on.

Point-in-time recovery replays the binary log, so the server must write one
(log_bin), in row format with full row images (so every change can be
replayed into a schema of another name), with a server id, and keep its
binlogs long enough for the archiver to catch up after an outage. The
archiver's user must be allowed to list and read binlogs as a replica.
"""

import subprocess
from dataclasses import dataclass

import pymysql

from archiving.services import archive
from backups.services import keys
from covet.engines import mysql_tools
from covet.engines.tools import private_dir
from covet.errors import ToolError
from backups.models import DatabaseTarget
from archiving.services.binlog_archiver import BINLOG_TOOLS
from backups.services.storages import get_storage
from backups.services.targets import target_engine
from core.audit import audit, cli_source
from core.lifecycle import job_tmp_dir

# Shorter retention than this means an archiver outage of a weekend-length
# incident response can lose binlogs before they are archived.
MIN_RETENTION_SECONDS = 24 * 3600
RECOMMENDED_RETENTION_SECONDS = 7 * 24 * 3600
READ_CHECK_TIMEOUT = 30
# Settings the server can change at run time (SET GLOBAL); log_bin and server_id need a restart.
DYNAMIC = {"binlog_format": "ROW", "binlog_row_image": "FULL"}


@dataclass
class Finding:
    """One checked setting: ok, or what to change (``required`` ones block archiving)."""

    name: str
    value: str
    ok: bool
    advice: str = ""
    required: bool = True

    def line(self) -> str:
        state = "ok    " if self.ok else ("change" if self.required else "note  ")
        return f"  {state} {self.name} = {self.value}" + (f": {self.advice}" if self.advice else "")


def check(conn) -> list[Finding]:
    """Check the server settings binlog PITR needs; return one finding per setting."""
    with conn.cursor() as cur:
        cur.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'log_bin_basename', 'binlog_format', "
                    "'binlog_row_image', 'server_id', 'expire_logs_days', 'binlog_expire_logs_seconds', 'version')")
        values = {name.lower(): value for name, value in cur.fetchall()}
    section = "[mariadbd]" if "mariadb" in values.get("version", "").lower() else "[mysqld]"
    findings = [
        Finding("log_bin", values.get("log_bin", "OFF"), values.get("log_bin") == "ON",
                "" if values.get("log_bin") == "ON" else
                f"add log_bin=/var/lib/mysql/binlog to {section} in the server's configuration and restart it"),
        Finding("binlog_format", values.get("binlog_format", ""), values.get("binlog_format") == "ROW",
                "" if values.get("binlog_format") == "ROW" else
                f"add binlog_format=ROW to {section} (and SET GLOBAL binlog_format=ROW, or --apply, for now): "
                "statement-format events cannot always be replayed into another schema"),
        Finding("binlog_row_image", values.get("binlog_row_image", ""), values.get("binlog_row_image") == "FULL",
                "" if values.get("binlog_row_image") == "FULL" else
                f"add binlog_row_image=FULL to {section} (and SET GLOBAL binlog_row_image=FULL, or --apply)"),
        Finding("server_id", values.get("server_id", "0"), values.get("server_id", "0") != "0",
                "" if values.get("server_id", "0") != "0" else
                f"add server_id=N (unique in the topology, not 0) to {section} and restart the server"),
    ]
    findings.append(_retention(values, section))
    return findings


def _retention(values: dict, section: str) -> Finding:
    seconds = values.get("binlog_expire_logs_seconds")
    if seconds is None or (seconds == "0" and values.get("expire_logs_days", "0") != "0"):
        seconds = str(round(float(values.get("expire_logs_days", "0")) * 86400))
    retention = int(float(seconds))
    if retention == 0:
        return Finding("binlog_expire_logs_seconds", "0", False, required=False,
                       advice="binlogs are never purged: disk use grows until you purge them (archived ones can go)")
    ok = retention >= MIN_RETENTION_SECONDS
    return Finding("binlog_expire_logs_seconds", str(retention), ok, required=False,
                   advice="" if ok else f"shorter than a day: an archiver outage longer than that loses binlogs; "
                                        f"set binlog_expire_logs_seconds={RECOMMENDED_RETENTION_SECONDS} in {section}")


def check_replication_read(target: DatabaseTarget, engine, first_file: str) -> None:
    """Read a binlog from the server as the archiver will; raise ToolError saying which grant is missing."""
    tool = mysql_tools.find_tool(BINLOG_TOOLS, "binlog tool")
    with private_dir(engine.tmp_dir, "covet-binlog-check-") as directory:
        args = [tool, f"--defaults-extra-file={engine._defaults_file(directory)}", "--read-from-remote-server",
                "--raw", f"--result-file={directory}/", first_file]
        try:
            done = subprocess.run(args, capture_output=True, timeout=READ_CHECK_TIMEOUT,
                                  env=engine._tool_env(directory), stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ToolError(f"reading {first_file} from target {target.name} took over {READ_CHECK_TIMEOUT} s") \
                from None
        if done.returncode != 0:
            message = done.stderr.decode(errors="replace").strip()[-500:]
            raise ToolError(f"the archiver cannot read binlogs from target {target.name}: {message}; grant its "
                            "user REPLICATION SLAVE (and BINLOG MONITOR on MariaDB / REPLICATION CLIENT on MySQL)")


def setup(target: DatabaseTarget, options: dict, stdout) -> None:
    """Check a MySQL/MariaDB server for binlog PITR, apply the dynamic settings with --apply, enable archiving.

    Print each setting and what to change. Raise ToolError (exit 5) when a
    required setting is wrong or the binlogs cannot be read as a replica;
    archiving is turned on (archive key, storage) only when all is well.
    """
    engine = target_engine(target, str(job_tmp_dir(target)))
    conn = engine._connect()
    try:
        findings = check(conn)
        if options.get("apply"):
            _apply(conn, findings, stdout)
            findings = check(conn)
        stdout.write(f"binlog settings of target {target.name}:")
        for finding in findings:
            stdout.write(finding.line())
        wrong = [finding for finding in findings if finding.required and not finding.ok]
        if wrong:
            raise ToolError(f"target {target.name} is not ready for binlog archiving: "
                            + "; ".join(f"{finding.name} is {finding.value}, {finding.advice}" for finding in wrong)
                            + f"; then run 'manage.py setup_pitr --target {target.name}' again")
        with conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            first_file = cur.fetchall()[-1][0]
    except pymysql.MySQLError as exc:
        raise ToolError(f"cannot check target {target.name}: {mysql_tools.server_message(exc)}; its user needs "
                        "BINLOG MONITOR (MariaDB) or REPLICATION CLIENT (MySQL)") from None
    finally:
        conn.close()
    check_replication_read(target, engine, first_file)
    storage = get_storage(options["storage"]) if options.get("storage") else None
    key_source = keys.key_ref(options.get("encryption_password_file"), options.get("key_file"))
    target = archive.enable_pitr(target, key_source=key_source, storage=storage)
    source = cli_source()
    audit(source, "pitr.setup", "target", target.name, source, engine="mysql")
    stdout.write(f"archiving is on for target {target.name}: storage {archive.archive_storage(target).name}, "
                 f"archive key {target.archive_key.get('key_id') or 'none'}\n"
                 f"the archiver must run: manage.py binlog_archive --target {target.name} (make run starts it)")


def _apply(conn, findings: list[Finding], stdout) -> None:
    changed = []
    with conn.cursor() as cur:
        for finding in findings:
            if not finding.ok and finding.name in DYNAMIC:
                cur.execute(f"SET GLOBAL {finding.name} = %s", (DYNAMIC[finding.name],))
                changed.append(f"{finding.name}={DYNAMIC[finding.name]}")
    if changed:
        stdout.write(f"applied for new sessions: {', '.join(changed)}; also put them in the server's configuration "
                     "so a restart keeps them")

