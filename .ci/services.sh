#!/usr/bin/env bash
# Installs and starts the services opsdeck's tests use: PostgreSQL 15 with
# pg_cron preloaded, and Redis. Idempotent; safe to run on a developer machine.
set -euo pipefail

PG_VERSION=15
PG_CONF_DIR=/etc/postgresql/${PG_VERSION}/main
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! dpkg -s postgresql-${PG_VERSION} >/dev/null 2>&1; then
  echo "== installing PostgreSQL ${PG_VERSION}"
  apt_install postgresql-${PG_VERSION}
fi
if ! dpkg -s postgresql-${PG_VERSION}-cron >/dev/null 2>&1; then
  echo "== installing pg_cron"
  apt_install postgresql-${PG_VERSION}-cron
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing Redis"
  apt_install redis-server
fi

# pg_cron must be preloaded; it runs its scheduler in the 'postgres' database.
# A conf.d file keeps our settings apart from the packaged postgresql.conf.
restart=0
conf=${PG_CONF_DIR}/conf.d/opsdeck.conf
wanted="shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.use_background_workers = on
max_worker_processes = 32
"
if ! printf '%s' "$wanted" | cmp -s - "$conf"; then
  $SUDO mkdir -p "${PG_CONF_DIR}/conf.d"
  printf '%s' "$wanted" | $SUDO tee "$conf" >/dev/null
  restart=1
fi
if ! grep -qE "^\s*include_dir\s*=\s*'conf.d'" ${PG_CONF_DIR}/postgresql.conf; then
  echo "include_dir = 'conf.d'" | $SUDO tee -a ${PG_CONF_DIR}/postgresql.conf >/dev/null
  restart=1
fi

if pg_lsclusters -h | awk '$1=="'${PG_VERSION}'" && $2=="main" {print $4}' | grep -q online; then
  if [ "$restart" = 1 ]; then
    echo "== restarting PostgreSQL to load pg_cron"
    $SUDO pg_ctlcluster --skip-systemctl-redirect ${PG_VERSION} main restart
  fi
else
  echo "== starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect ${PG_VERSION} main start
fi

for _ in $(seq 1 60); do
  pg_isready -h 127.0.0.1 -p 5432 -q && break
  sleep 0.5
done
pg_isready -h 127.0.0.1 -p 5432

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "== starting Redis"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" \
    --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 40); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
    sleep 0.25
  done
fi
redis-cli -h 127.0.0.1 -p 6379 ping

psql -h 127.0.0.1 -U postgres -d postgres -Atqc "show shared_preload_libraries" | grep -q pg_cron
PGOPTIONS="-c client_min_messages=warning" psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE EXTENSION IF NOT EXISTS pg_cron" >/dev/null
echo "== services ready: PostgreSQL (pg_cron $(psql -h 127.0.0.1 -U postgres -d postgres -Atqc "select extversion from pg_extension where extname='pg_cron'")), Redis"
