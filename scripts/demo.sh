#!/usr/bin/env bash
# Quick start, command 1: runs the main job end to end on the built-in defaults. Starts local RabbitMQ and
# PostgreSQL if needed, builds, generates the small model, starts the Producer and a worker, submits a few jobs
# and prints their results and timings, then stops the Producer and worker. `--keep` leaves them running.
source "$(dirname "$0")/common.sh"
keep=0; [ "${1:-}" = "--keep" ] && keep=1
bash scripts/up.sh
[ $keep = 1 ] || trap 'bash scripts/down.sh' EXIT
dotnet run --no-build -c Release --project src/Cli -- demo --api "$API_URL" --jobs "${DEMO_JOBS:-6}" --max-tokens "${DEMO_MAX_TOKENS:-48}"
