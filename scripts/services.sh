#!/usr/bin/env bash
# Makes sure RabbitMQ and PostgreSQL are running locally (or uses yours).
#   - With LLMSERVING_EXTERNAL_SERVICES=1, does nothing: ConnectionStrings__Postgres / __RabbitMq point at your servers.
#   - Else, if a Docker engine answers, starts infra/compose.yaml.
#   - Else installs (Debian/Ubuntu packages) and starts local servers on their default ports.
# Idempotent: safe to run again while the services are up.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[services] $*" >&2; }
SUDO=""; AS_PG="runuser -u postgres --"
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; AS_PG="sudo -u postgres"; fi

if [ "${LLMSERVING_EXTERNAL_SERVICES:-}" = "1" ]; then
  log "using the configured servers (LLMSERVING_EXTERNAL_SERVICES=1)"
  exit 0
fi

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  log "Docker engine found: starting infra/compose.yaml"
  docker compose -f infra/compose.yaml up -d --wait postgres rabbitmq
  dpkg -s libgomp1 >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libgomp1 >/dev/null; }
  exit 0
fi

need_pkgs=()
command -v pg_ctlcluster >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v rabbitmq-server >/dev/null 2>&1 || need_pkgs+=(rabbitmq-server)
dpkg -s libgomp1 >/dev/null 2>&1 || need_pkgs+=(libgomp1)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]} (Debian packages)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# PostgreSQL: the distribution's default cluster.
PG_VER=$(ls /etc/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  log "starting PostgreSQL $PG_VER"
  $SUDO pg_ctlcluster "$PG_VER" main start
fi
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
# Tests and the monolith run several hosts (each with its own pool) against one server: allow more connections.
if [ "$($AS_PG psql -tAc 'SHOW max_connections')" -lt 300 ]; then
  log "raising PostgreSQL max_connections to 300"
  $AS_PG psql -q -c "ALTER SYSTEM SET max_connections = 300" >/dev/null
  $SUDO pg_ctlcluster "$PG_VER" main restart
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
$AS_PG psql -q -v ON_ERROR_STOP=1 -d postgres <<'SQL' >/dev/null
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'llmserving') THEN
    CREATE ROLE llmserving LOGIN PASSWORD 'llmserving' CREATEDB;
  END IF;
END $$;
SQL
if ! $AS_PG psql -tAc "SELECT 1 FROM pg_database WHERE datname='llmserving'" | grep -q 1; then
  $AS_PG createdb -O llmserving llmserving
fi

# RabbitMQ: queue statistics every second (default 5 s) so that the autoscaler sees depth changes within its poll.
if ! grep -qs "collect_statistics_interval" /etc/rabbitmq/rabbitmq.conf; then
  echo "collect_statistics_interval = 1000" | $SUDO tee -a /etc/rabbitmq/rabbitmq.conf >/dev/null
  if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
    log "restarting RabbitMQ to apply its configuration"
    $SUDO rabbitmqctl stop >/dev/null 2>&1 || true
    sleep 2
  fi
fi

# RabbitMQ: no systemd on minimal machines, so start it detached.
if ! rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  log "starting RabbitMQ"
  $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do rabbitmq-diagnostics -q ping >/dev/null 2>&1 && break; sleep 1; done
fi
rabbitmq-diagnostics -q ping >/dev/null 2>&1 || { log "RabbitMQ did not start"; exit 1; }
# The management API reports ready + unacknowledged counts: the autoscaler's queue depth.
if ! rabbitmq-plugins is_enabled rabbitmq_management --quiet >/dev/null 2>&1; then
  log "enabling the RabbitMQ management plugin"
  $SUDO rabbitmq-plugins enable rabbitmq_management >/dev/null
fi
for _ in $(seq 1 90); do curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null && break; sleep 1; done
curl -sf -u guest:guest http://127.0.0.1:15672/api/overview >/dev/null || log "warning: RabbitMQ's management API is not answering yet (autoscaler and console tests need it)"
log "PostgreSQL and RabbitMQ are up"
