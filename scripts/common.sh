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
export ConnectionStrings__Postgres="${ConnectionStrings__Postgres:-Host=127.0.0.1;Port=5432;Username=llmserving;Password=llmserving;Database=llmserving}"
export ConnectionStrings__RabbitMq="${ConnectionStrings__RabbitMq:-amqp://guest:guest@127.0.0.1:5672/}"
MODEL="${LLMSERVING_MODEL:-$ROOT/models/random-tiny.gguf}"
API_URL="${LLMSERVING_API:-http://127.0.0.1:5080}"
RUN_DIR="$ROOT/.run"
