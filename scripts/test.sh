#!/usr/bin/env bash
# Quick start, command 2: runs the whole test suite against real RabbitMQ, PostgreSQL and llama.cpp (starting
# local servers if needed). Its last line is the summary "N passed, N failed, N skipped".
source "$(dirname "$0")/common.sh"
bash scripts/services.sh
# The console's browser tests drive Debian's Chromium through Playwright (its own browser download is not used).
if [ -z "${LLMSERVING_CHROMIUM:-}" ] && ! [ -x /usr/bin/chromium ]; then
  echo "[llmserving] installing chromium (Debian package) for the console's browser tests" >&2
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
# The fault tests may restart the local servers this script manages (never servers you configured yourself).
if [ "${LLMSERVING_EXTERNAL_SERVICES:-}" != "1" ] && [ "$(id -u)" = "0" ]; then
  export LLMSERVING_TEST_CAN_RESTART_SERVICES=1
fi
echo "[llmserving] building" >&2
dotnet build LlmServing.sln -v quiet -nologo >/dev/null || dotnet build LlmServing.sln -nologo -v quiet
results="$ROOT/.artifacts/test-results"
rm -rf "$results"; mkdir -p "$results"
: > "$ROOT/.artifacts/test-output.log"
set +e
# Two tiers, the fast one first: pure logic (no servers, seconds), then everything against the real servers.
status=0
for tier in LlmServing.UnitTests LlmServing.Tests; do
  echo "[llmserving] testing $tier" >&2
  dotnet test "tests/$tier/$tier.csproj" --no-build --filter "TestCategory!=Chaos" --logger "trx;LogFileName=$tier.trx" \
    --logger "console;verbosity=normal" --results-directory "$results" 2>&1 \
    | grep -vE '^(llama_|load|print_info|sched_|graph_|llm_load|init_|srv |common_|  - |set_abort|llama_model_loader|.*: +- )' \
    | tee -a "$ROOT/.artifacts/test-output.log"
  tier_status=${PIPESTATUS[0]}
  [ "$tier_status" = "0" ] || status=$tier_status
  [ -f "$results/$tier.trx" ] || { echo "[llmserving] $tier wrote no results" >&2; status=1; }
done
set -e
passed=0; failed=0; skipped=0
for trx in "$results"/*.trx; do
  [ -f "$trx" ] || continue
  counters=$(grep -o '<Counters [^>]*>' "$trx")
  num() { echo "$counters" | grep -o " $1=\"[0-9]*\"" | grep -o '[0-9]*' || true; }
  p=$(num passed); f=$(num failed); t=$(num total); e=$(num error); to=$(num timeout); ab=$(num aborted)
  f=$(( ${f:-0} + ${e:-0} + ${to:-0} + ${ab:-0} ))
  s=$(( ${t:-0} - ${p:-0} - f )); [ "$s" -ge 0 ] || s=0
  passed=$(( passed + ${p:-0} )); failed=$(( failed + f )); skipped=$(( skipped + s ))
done
if [ "$status" != "0" ] && [ "$failed" = "0" ]; then failed=1; fi
if [ "$failed" != "0" ]; then
  # Repeat each failure (name, message, first lines of its stack) right above the summary, so that a log that keeps
  # only its tail still says what failed.
  echo "[llmserving] failed tests:"
  awk '/^  Failed [A-Za-z_]/ { n = 14 } n > 0 { print; n-- }' "$ROOT/.artifacts/test-output.log" | cut -c1-300
fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$failed" = "0" ]
