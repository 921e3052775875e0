# Sourced by the scripts: repository root, .NET check, default connection settings.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

if ! command -v dotnet >/dev/null 2>&1; then
  echo "[llmserving] installing the .NET 10 SDK (Debian/Ubuntu package dotnet-sdk-10.0)" >&2
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dotnet-sdk-10.0 >/dev/null || {
    echo "[llmserving] could not install the .NET 10 SDK; install it from https://dot.net and run again" >&2; exit 1; }
fi

# Servers started by scripts/services.sh (local packages or Docker Compose) use these; set them to use others.
export ConnectionStrings__Postgres="${ConnectionStrings__Postgres:-Host=127.0.0.1;Port=5432;Username=llmserving;Password=llmserving;Database=llmserving;SSL Mode=Disable}"
export ConnectionStrings__RabbitMq="${ConnectionStrings__RabbitMq:-amqp://guest:guest@127.0.0.1:5672/}"
# The model: $LLMSERVING_MODEL, else the trained TinyStories 260K model (real English, 1 MB) from models/, from
# ../shared/models/ beside the checkout, or downloaded from Hugging Face (ggml-org/models) unless LLMSERVING_OFFLINE=1;
# else the generated random-weight model (its output is noise by design). resolve_model picks and says which.
STORIES_URL="https://huggingface.co/ggml-org/models/resolve/main/tinyllamas/stories260K.gguf"
GENERATED_MODEL="$ROOT/models/random-tiny.gguf"
resolve_model() {
  if [ -n "${LLMSERVING_MODEL:-}" ]; then MODEL="$LLMSERVING_MODEL"; return; fi
  for candidate in "$ROOT/models/stories260K.gguf" "$ROOT/../shared/models/stories260K.gguf"; do
    if [ -f "$candidate" ]; then MODEL="$candidate"; echo "[llmserving] model: TinyStories 260K ($candidate)" >&2; return; fi
  done
  if [ "${LLMSERVING_OFFLINE:-}" != "1" ]; then
    mkdir -p "$ROOT/models"
    if curl -sfL --max-time 30 -o "$ROOT/models/stories260K.gguf.part" "$STORIES_URL" \
       && [ "$(head -c 4 "$ROOT/models/stories260K.gguf.part")" = "GGUF" ]; then
      mv "$ROOT/models/stories260K.gguf.part" "$ROOT/models/stories260K.gguf"
      MODEL="$ROOT/models/stories260K.gguf"; echo "[llmserving] model: TinyStories 260K, downloaded from Hugging Face" >&2; return
    fi
    rm -f "$ROOT/models/stories260K.gguf.part"
  fi
  MODEL="$GENERATED_MODEL"
  echo "[llmserving] model: the generated random-weight model (offline, or Hugging Face unreachable): its text is noise" >&2
}
MODEL="${LLMSERVING_MODEL:-}"
API_URL="${LLMSERVING_API:-http://127.0.0.1:5080}"
RUN_DIR="$ROOT/.run"
