#!/usr/bin/env bash
# Local stack: Prefect server (UI :4200), MLflow tracking server (UI :5000) and the runner that
# serves the `retrain` (on demand) and `monitor` (daily) deployments. `stack.sh up` starts what is not running and waits for each
# health check; `stack.sh down` stops exactly what `up` started (PIDs in .llmrec/run/).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${BIN:-$ROOT/.venv/bin}
RUN=$ROOT/.llmrec/run
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
export PREFECT_HOME=$ROOT/.llmrec/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false   # saves ~2 GB of worker processes
mkdir -p "$RUN" "$PREFECT_HOME"

STOP_WAIT=20
# shellcheck source=../lib/processes.sh
. "$ROOT/infra/lib/processes.sh"

case "${1:-}" in
  up)
    # the UI's browser code asks PREFECT_UI_API_URL for its API (default :4200, wrong for another port)
    PREFECT_UI_API_URL="http://127.0.0.1:$PREFECT_PORT/api" \
      start prefect "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT"
    start mlflow "$BIN/mlflow" server --backend-store-uri "sqlite:///$ROOT/mlflow.db" \
      --artifacts-destination "$ROOT/mlartifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1
    wait_for prefect "http://127.0.0.1:$PREFECT_PORT/api/health" 120
    wait_for mlflow "http://127.0.0.1:$MLFLOW_PORT/health" 120
    # client timeouts and retries set explicitly (Prefect logs each retry with its attempt; llmrec does so for MLflow,
    # params.yaml tracking.timeout_seconds / tracking.retries)
    PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api" MLFLOW_TRACKING_URI="http://127.0.0.1:$MLFLOW_PORT" \
      PREFECT_API_REQUEST_TIMEOUT=30 PREFECT_CLIENT_MAX_RETRIES=3 \
      PREFECT_RUNNER_POLL_FREQUENCY=2 PATH="$BIN:$PATH" start runner "$BIN/python" -m flows.deploy
    served=0
    for _ in $(seq 120); do
      alive runner || break
      if curl -sf -o /dev/null "http://127.0.0.1:$PREFECT_PORT/api/deployments/name/retrain/retrain" &&
         curl -sf -o /dev/null "http://127.0.0.1:$PREFECT_PORT/api/deployments/name/monitor/monitor"; then served=1; break; fi
      sleep 1
    done
    [ "$served" = 1 ] || { echo "the runner did not serve retrain and monitor; last log lines:"; tail -20 "$RUN/runner.log"; exit 1; }
    echo "  runner is up: deployments retrain/retrain (on demand), monitor/monitor (daily 06:00 UTC, batch folder incoming/),"
    echo "  batch-recommend/batch-recommend (daily 07:00 UTC: every user's top-k to outputs/recommendations.parquet)"
    cat <<TXT

llmrec stack is up
  Prefect UI   http://127.0.0.1:$PREFECT_PORT   (Deployments -> retrain -> Run: the settings form)
  MLflow UI    http://127.0.0.1:$MLFLOW_PORT
  from a shell PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api $BIN/prefect deployment run retrain/retrain \\
                 --params '{"settings": {"max_steps": 60}}'      (or monitor/monitor --param batch=incoming)
  logs         $RUN/*.log          stop with: make down
TXT
    ;;
  down)
    stop runner; stop mlflow; stop prefect ;;
  status)
    for n in prefect mlflow runner; do alive "$n" && echo "$n running (pid $(cat "$RUN/$n.pid"))" || echo "$n stopped"; done ;;
  *) echo "usage: $0 up|down|status"; exit 2 ;;
esac
