#!/usr/bin/env bash
# Starts the whole stack and leaves it running: RabbitMQ + PostgreSQL (scripts/services.sh), the Producer API and
# one GPU worker on TinyStories 260K when it can be found or fetched, else the generated model (or $LLMSERVING_MODEL). Prints the API URL. Stop it with scripts/down.sh.
source "$(dirname "$0")/common.sh"

bash scripts/services.sh
"$ROOT/scripts/down.sh" >/dev/null 2>&1 || true
echo "[llmserving] building (Release)" >&2
dotnet build LlmServing.sln -c Release -v quiet -nologo ${LLMSERVING_BUILD_ARGS:-} >/dev/null
resolve_model
if [ "$MODEL" = "$GENERATED_MODEL" ] && [ ! -f "$MODEL" ]; then
  dotnet run --no-build -c Release --project src/ModelGen -- --out "$MODEL" >&2
fi
# The Producer bounds max_tokens by the workers' context: TinyStories was trained on 512 tokens.
case "$MODEL" in *stories260K*) export Inference__ContextSize="${Inference__ContextSize:-512}" Producer__ContextSize="${Producer__ContextSize:-512}" ;; esac

mkdir -p "$RUN_DIR"
export Inference__ModelPath="$MODEL"
export Urls="$API_URL"
nohup dotnet run --no-build -c Release --project src/Producer >"$RUN_DIR/producer.log" 2>&1 &
echo $! >"$RUN_DIR/producer.pid"
nohup dotnet run --no-build -c Release --project src/GpuWorker >"$RUN_DIR/worker.log" 2>&1 &
echo $! >"$RUN_DIR/worker.pid"

for _ in $(seq 1 120); do
  if curl -sf "$API_URL/openapi/v1.json" >/dev/null 2>&1 && grep -q "Application started" "$RUN_DIR/worker.log"; then
    echo "[llmserving] API: $API_URL (interactive page: $API_URL/docs, OpenAPI: $API_URL/openapi/v1.json)" >&2
    echo "[llmserving] logs: $RUN_DIR/producer.log, $RUN_DIR/worker.log; stop with scripts/down.sh" >&2
    exit 0
  fi
  for p in producer worker; do
    if ! kill -0 "$(cat "$RUN_DIR/$p.pid")" 2>/dev/null; then
      echo "[llmserving] the $p exited; last lines of $RUN_DIR/$p.log:" >&2; tail -n 30 "$RUN_DIR/$p.log" >&2; exit 1
    fi
  done
  sleep 1
done
echo "[llmserving] the stack did not become ready in 120 s; see $RUN_DIR/*.log" >&2
exit 1
