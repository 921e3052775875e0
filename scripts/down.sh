#!/usr/bin/env bash
# Stops the Producer and worker started by scripts/up.sh (RabbitMQ and PostgreSQL keep running).
source "$(dirname "$0")/common.sh"
for p in worker producer; do
  if [ -f "$RUN_DIR/$p.pid" ]; then
    pid=$(cat "$RUN_DIR/$p.pid")
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    rm -f "$RUN_DIR/$p.pid"
  fi
done
