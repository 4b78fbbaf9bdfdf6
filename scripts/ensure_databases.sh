#!/usr/bin/env bash
# The engine tests use the PostgreSQL and MariaDB servers of this machine (make test needs both).
# Start them with the Debian commands when they are installed but not answering.
set -euo pipefail
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
maria_up() { mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -uroot ping >/dev/null 2>&1; }
wait_for() { for _ in $(seq 60); do "$1" && return 0; sleep 0.5; done; return 1; }

if ! pg_up; then
  if ! command -v pg_ctlcluster >/dev/null; then
    echo "PostgreSQL is not running on 127.0.0.1:5432 and not installed: apt-get install postgresql" >&2; exit 1
  fi
  echo "starting PostgreSQL..."
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  wait_for pg_up || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
fi
if ! maria_up; then
  if ! command -v mariadbd >/dev/null && [ ! -x /usr/sbin/mariadbd ]; then
    echo "MariaDB is not running on 127.0.0.1:3306 and not installed: apt-get install mariadb-server" >&2; exit 1
  fi
  echo "starting MariaDB..."
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_for maria_up || { echo "MariaDB did not come up on 127.0.0.1:3306" >&2; exit 1; }
fi
