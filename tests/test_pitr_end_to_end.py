"""The whole PostgreSQL PITR path as an operator drives it, through the commands only: setup_pitr
--apply, the shipper archiving real WAL, a base backup, an incident (DROP TABLE), and a recovery to the
second before it that brings back exactly the rows committed by then."""

import json
import time
from datetime import timedelta

import psycopg
import pytest


from backups.models import ArchivedLog

from bench.servers import free_port
from tests.pitr_fixtures import reachable_dir as recovery_parent
from tests.wal_fixtures import ArchivingCluster, ShipperProcess, reachable_dir, remove
from backups.services.targets import add_target

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_recovers_a_dropped_table_to_the_second_before(default_key, backup_dir, settings, cli,
                                                                     servers):
    run_dir = reachable_dir("covet-run-")
    cluster = ArchivingCluster().start()
    shipper = None
    try:
        target = add_target("pg-shop", "postgresql", "postgres", host="127.0.0.1", port=cluster.port,
                                     user="postgres")
        applied = cli("setup_pitr", "--target", "pg-shop", "--socket-dir", str(run_dir), "--apply",
                      "--archive-timeout", "5")
        assert applied.returncode == 0, applied.stderr
        cluster.restart()
        shipper = ShipperProcess(settings, target.name, run_dir)
        with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY, amount numeric, placed timestamptz)")
            conn.execute("INSERT INTO orders SELECT g, g * 2.5, now() FROM generate_series(1, 1000) g")

        base = cli("backup_database", "--target", "pg-shop", "--type", "base", "--output-format", "json")
        assert base.returncode == 0, base.stderr
        assert json.loads(base.stdout)["usable"] is True  # the shipper archived its WAL while it waited

        with psycopg.connect(**cluster.server, dbname="postgres", autocommit=True) as conn:
            for batch in range(3):
                time.sleep(1.1)
                conn.execute("INSERT INTO orders SELECT g, 1, now() FROM generate_series(%s::int, %s::int) g",
                             (2000 + batch * 10, 2009 + batch * 10))
            last_good = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            time.sleep(1.1)
            conn.execute("DROP TABLE orders")  # the incident
            time.sleep(1.1)
            conn.execute("CREATE TABLE after_incident (id int)")  # work goes on
            segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
            conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 60
        while not ArchivedLog.objects.filter(target=target, name=segment).exists():
            assert time.monotonic() < deadline, f"{segment} was never archived:\n{shipper.output()}"
            time.sleep(0.2)

        data_dir = recovery_parent(servers) / "recovered"
        port = free_port()
        recovered = cli("restore_database", "--target", "pg-shop",
                        "--pitr-target", (last_good + timedelta(milliseconds=500)).isoformat(),
                        "--data-directory", str(data_dir), "--start", "--port", str(port), "--output-format", "json")
        assert recovered.returncode == 0, recovered.stderr
        result = json.loads(recovered.stdout)
        assert result["state"] == "promoted" and result["backup_id"] == json.loads(base.stdout)["backup_id"]
        with psycopg.connect(host=str(data_dir), port=port, user="postgres", dbname="postgres") as conn:
            assert conn.execute("SELECT count(*), max(id) FROM orders").fetchone() == (1030, 2029)
            assert conn.execute("SELECT to_regclass('after_incident')").fetchone()[0] is None
    finally:
        if shipper is not None:
            shipper.stop()
        cluster.stop()
        remove(run_dir)
