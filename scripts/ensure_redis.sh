#!/usr/bin/env bash
# Make sure Redis answers at REDIS_URL; start a loopback-only one when nothing does.
set -euo pipefail
url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
hostport="${url#redis://}"; hostport="${hostport%%/*}"; hostport="${hostport##*@}"
host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$host" ] && port=6379
ping() { (exec 3<>"/dev/tcp/$host/$port" && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
ping && exit 0
if [ "$host" != "127.0.0.1" ] && [ "$host" != "localhost" ]; then
  echo "Redis at $host:$port does not answer; start it there or set REDIS_URL" >&2; exit 1
fi
if ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing redis-server (Debian package)..."
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "Redis is not running and redis-server is not installed: run 'sudo apt-get install redis-server' or set REDIS_URL" >&2; exit 1
  fi
fi
echo "starting redis-server on 127.0.0.1:$port"
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no >/dev/null
for _ in $(seq 50); do ping && exit 0; sleep 0.1; done
echo "redis-server did not answer on 127.0.0.1:$port" >&2; exit 1
