#!/usr/bin/env bash
# PostgreSQL and Redis on loopback for the Celery test (Airflow's metadata DB + result backend,
# and the broker), from Debian's packages. Idempotent: installs only what is missing, starts
# only what is not answering, and creates the test role only once.
#
# PostgreSQL: the Debian cluster (`pg_lsclusters`) with a role `istio_canary` (password
# `istio_canary`, CREATEDB), so the system's own `postgres` role and pg_hba.conf stay as they are.
# Redis: `redis-server` bound to 127.0.0.1:6379, daemonized.
set -euo pipefail

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
ROLE=istio_canary

missing=""
command -v pg_ctlcluster >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$missing postgresql"
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  $SUDO apt-get update -q
  # policy-rc.d may forbid starting services at install time: we start them below ourselves.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi

# PostgreSQL: the first cluster Debian created (create one if the package left none).
if ! pg_lsclusters -h | grep -q .; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  $SUDO pg_createcluster "$version" main
fi
read -r pg_version pg_cluster pg_port pg_status _ < <(pg_lsclusters -h | head -1)
if [ "$pg_status" != online ]; then
  echo "starting PostgreSQL $pg_version/$pg_cluster on port $pg_port"
  $SUDO pg_ctlcluster "$pg_version" "$pg_cluster" start
fi
for _ in $(seq 1 30); do
  pg_isready -q -h 127.0.0.1 -p "$pg_port" && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p "$pg_port"
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
if ! as_postgres psql -p "$pg_port" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'" | grep -q 1; then
  as_postgres psql -q -p "$pg_port" -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$ROLE'"
fi

# Redis on loopback only.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting redis-server on 127.0.0.1:6379"
  $SUDO redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save "" --appendonly no \
    --logfile /var/log/redis-istio-canary.log
  for _ in $(seq 1 30); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
redis-cli -h 127.0.0.1 -p 6379 ping
