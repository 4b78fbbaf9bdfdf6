#!/usr/bin/env bash
# Start Covet Backup on this machine: catalog, Redis, first-run set-up, then
# the web server, an RQ worker, the housekeeper and one archiver per target
# with PITR on, all stopped by Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export DJANGO_SETTINGS_MODULE="${DJANGO_SETTINGS_MODULE:-covet_site.settings}"
BIND="${COVET_BIND:-127.0.0.1:8000}"

mkdir -p var && chmod 700 var
$PY manage.py migrate --noinput
scripts/ensure_redis.sh
$PY manage.py covet_setup
$PY manage.py collectstatic --noinput >/dev/null

pids=()
stop() {
  trap - INT TERM EXIT
  echo "stopping..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

.venv/bin/gunicorn covet_site.wsgi:application --bind "$BIND" --workers "${COVET_WEB_WORKERS:-2}" \
  --access-logfile - --graceful-timeout 10 &
pids+=($!)
# restores-<host>: point-in-time recoveries whose data directory lives on this host.
$PY manage.py rqworker --with-scheduler backups restores verification default "restores-${COVET_HOST:-$(hostname)}" &
pids+=($!)
$PY manage.py run_housekeeper &
pids+=($!)
# PITR archivers: the WAL shipper of each PostgreSQL target, the binlog archiver of each MySQL/MariaDB one.
while read -r engine name; do
  case "$engine" in
    postgresql) $PY manage.py run_shipper --target "$name" & ;;
    mysql) $PY manage.py binlog_archive --target "$name" & ;;
    *) continue ;;
  esac
  pids+=($!)
done < <($PY manage.py pitr_targets)

echo "Covet Backup is running on http://$BIND/ (admin at /admin/, API at /api/). Ctrl-C stops it."
# Whichever process ends first (or Ctrl-C) stops the others.
wait -n "${pids[@]}" || true
