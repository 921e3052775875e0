#!/usr/bin/env bash
# The chaos run (about 12 minutes, restarts the local RabbitMQ and PostgreSQL): 1,000 jobs and a 5,000-line batch
# through SIGKILLed workers, a stopped broker, a restarted database, a SIGKILLed Producer and a six-minute database
# outage; then every accepted job and line must have finished exactly once. Not part of scripts/test.sh.
# The timeline and figures land in .artifacts/chaos.txt. LLMSERVING_CHAOS_OUTAGE_MINUTES shortens the outage.
source "$(dirname "$0")/common.sh"
bash scripts/services.sh
export LLMSERVING_TEST_CAN_RESTART_SERVICES=1
dotnet build LlmServing.sln -v quiet -nologo >/dev/null
dotnet test tests/LlmServing.Tests --no-build --filter "TestCategory=Chaos" --logger "console;verbosity=normal" 2>&1 \
  | grep -vE '^(llama_|load|print_info|sched_|graph_|llm_load|init_|srv |common_|  - |set_abort|llama_model_loader|.*: +- )'
