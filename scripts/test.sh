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
set +e
dotnet test LlmServing.sln --no-build --filter "TestCategory!=Chaos" --logger "trx;LogFileName=tests.trx" --logger "console;verbosity=normal" \
  --results-directory "$results" 2>&1 | grep -vE '^(llama_|load|print_info|sched_|graph_|llm_load|init_|srv |common_|  - |set_abort|llama_model_loader|.*: +- )' \
  | tee "$ROOT/.artifacts/test-output.log"
status=${PIPESTATUS[0]}
set -e
trx=$(find "$results" -name '*.trx' | head -n 1)
if [ -z "$trx" ]; then
  echo "0 passed, 1 failed"
  exit 1
fi
counters=$(grep -o '<Counters [^>]*>' "$trx")
num() { echo "$counters" | grep -o " $1=\"[0-9]*\"" | grep -o '[0-9]*'; }
passed=$(num passed); failed=$(num failed); total=$(num total)
errors=$(num error); timeout=$(num timeout); aborted=$(num aborted)
failed=$(( ${failed:-0} + ${errors:-0} + ${timeout:-0} + ${aborted:-0} ))
skipped=$(( ${total:-0} - ${passed:-0} - failed )); [ "$skipped" -ge 0 ] || skipped=0
if [ "$status" != "0" ] && [ "$failed" = "0" ]; then failed=1; fi
if [ "$failed" != "0" ]; then
  # Repeat each failure (name, message, first lines of its stack) right above the summary, so that a log that keeps
  # only its tail still says what failed.
  echo "[llmserving] failed tests:"
  awk '/^  Failed [A-Za-z_]/ { n = 14 } n > 0 { print; n-- }' "$ROOT/.artifacts/test-output.log" | cut -c1-300
fi
echo "${passed:-0} passed, ${failed} failed, ${skipped} skipped"
[ "$failed" = "0" ]
