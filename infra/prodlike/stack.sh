#!/usr/bin/env bash
# Production-like local stack, as plain processes on loopback (no Docker needed):
#   - a private PostgreSQL cluster (Debian's postgresql: initdb + pg_ctl), password auth,
#     one database for Prefect and one for MLflow;
#   - moto's S3 server as the S3 endpoint, with a bucket for MLflow artifacts and one for DVC;
#   - MLflow server: Postgres backend store, artifacts proxied to s3://$MLFLOW_BUCKET;
#   - Prefect server: Postgres backend;
#   - the project's DVC default remote pointed at s3://$DVC_BUCKET (in .dvc/config.local only).
# It is the same topology as infra/compose.yaml. It is ephemeral: moto keeps S3 in memory, so
# `up` always starts from an empty cluster and empty buckets, and `down` stops every process it
# started, deletes the cluster and restores the DVC remote.
#
#   infra/prodlike/stack.sh up | down | status | env     (make prodlike-up / prodlike-down)
#   eval "$(infra/prodlike/stack.sh env)"                  # point llmrec, prefect, mlflow at it
#
# Ports (loopback only): PG_PORT (5433), S3_PORT (9000), MLFLOW_PORT (5000), PREFECT_PORT (4200).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${BIN:-$ROOT/.venv/bin}
STATE=${PRODLIKE_STATE:-$ROOT/.llmrec/prodlike}
RUN=$STATE/run
HOST=127.0.0.1
PG_PORT=${PG_PORT:-5433}
S3_PORT=${S3_PORT:-9000}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_BUCKET=${MLFLOW_BUCKET:-llmrec-mlflow}
DVC_BUCKET=${DVC_BUCKET:-llmrec-dvc}
DVC_REMOTE=prodlike
S3_URL=http://$HOST:$S3_PORT
# moto accepts any key; real S3/MinIO credentials never go here (see infra/compose.env.example).
S3_KEY=llmrec-local S3_SECRET=llmrec-local-secret
SERVICES="moto mlflow prefect"
export DO_NOT_TRACK=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 PREFECT_SERVER_ANALYTICS_ENABLED=false
unset PREFECT_API_URL MLFLOW_TRACKING_URI   # the servers must not talk to another stack

# --- helpers ---------------------------------------------------------------------------------
die() { echo "prodlike: $*" >&2; exit 1; }

# shellcheck source=../lib/processes.sh
. "$ROOT/infra/lib/processes.sh"

port_free() { ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

pg_bin() {  # folder of initdb/pg_ctl/psql: PG_BIN, else the newest Debian cluster version, else PATH
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  local newest; newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -n "$newest" ] && [ -x "$newest/initdb" ]; then echo "$newest"; return; fi
  command -v initdb > /dev/null && { dirname "$(readlink -f "$(command -v initdb)")"; return; }
  die "PostgreSQL server binaries not found: install them (Debian: apt-get install -y postgresql) or set PG_BIN"
}

as_pg() {  # run a command as the cluster owner: postgres refuses to run as root
  if [ "$(id -u)" != 0 ]; then "$@"
  elif command -v runuser > /dev/null; then runuser -u postgres -- "$@"
  else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
}

pg_base() { cat "$RUN/pgbase" 2>/dev/null || true; }   # the cluster folder chosen by `up`

pg_running() { local b; b=$(pg_base); [ -n "$b" ] && [ -f "$b/data/postmaster.pid" ] && as_pg "$(pg_bin)/pg_ctl" -D "$b/data" status > /dev/null 2>&1; }

new_secret() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

make_pg_base() {  # a folder the cluster owner can reach: under .llmrec/ when possible
  local base=$STATE/postgres
  mkdir -p "$base"
  if [ "$(id -u)" = 0 ]; then
    id postgres > /dev/null 2>&1 || die "running as root needs the 'postgres' user (Debian's postgresql package creates it)"
    chown postgres: "$base"; chmod 700 "$base"
    if ! as_pg test -w "$base"; then  # a parent folder is closed to postgres (e.g. /root, pytest's tmp)
      rmdir "$base"
      base=$(mktemp -d "${TMPDIR:-/tmp}/llmrec-pg.XXXXXX"); chown postgres: "$base"
    fi
  fi
  echo "$base"
}

pg_up() {
  local bin base; bin=$(pg_bin); base=$(make_pg_base)
  echo "$base" > "$RUN/pgbase"
  local su_pw; su_pw=$(new_secret)
  PREFECT_DB_PASSWORD=$(new_secret); MLFLOW_DB_PASSWORD=$(new_secret); LLMREC_DB_PASSWORD=$(new_secret)
  (umask 077; printf 'PG_SUPERUSER_PASSWORD=%s\nPREFECT_DB_PASSWORD=%s\nMLFLOW_DB_PASSWORD=%s\nLLMREC_DB_PASSWORD=%s\n' \
    "$su_pw" "$PREFECT_DB_PASSWORD" "$MLFLOW_DB_PASSWORD" "$LLMREC_DB_PASSWORD" > "$RUN/credentials.env")
  (umask 077; echo "$su_pw" > "$base/pwfile"); [ "$(id -u)" = 0 ] && chown postgres: "$base/pwfile"
  as_pg "$bin/initdb" -D "$base/data" -U postgres --pwfile="$base/pwfile" -E UTF8 --locale=C \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 > "$RUN/initdb.log" 2>&1 \
    || { tail -20 "$RUN/initdb.log"; die "initdb failed (log: $RUN/initdb.log)"; }
  rm -f "$base/pwfile"
  # loopback TCP only (no unix socket), small memory footprint for a 2-core machine
  as_pg "$bin/pg_ctl" -D "$base/data" -l "$base/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=$HOST -c unix_socket_directories='' -c shared_buffers=64MB -c max_connections=60" \
    start > /dev/null || { tail -20 "$base/postgres.log"; die "PostgreSQL did not start (log: $base/postgres.log)"; }
  # the same script the compose Postgres runs on its first start
  PATH="$bin:$PATH" PGHOST=$HOST PGPORT=$PG_PORT PGPASSWORD=$su_pw POSTGRES_USER=postgres \
    PREFECT_DB_PASSWORD=$PREFECT_DB_PASSWORD MLFLOW_DB_PASSWORD=$MLFLOW_DB_PASSWORD LLMREC_DB_PASSWORD=$LLMREC_DB_PASSWORD \
    sh "$ROOT/infra/postgres/init-databases.sh" > /dev/null
  echo "  postgres is up: $HOST:$PG_PORT (databases prefect, mlflow, llmrec; cluster in $base)"
}

pg_down() {
  local base; base=$(pg_base)
  [ -n "$base" ] || return 0
  if [ -f "$base/data/postmaster.pid" ]; then
    as_pg "$(pg_bin)/pg_ctl" -D "$base/data" -m fast -w -t 60 stop > /dev/null && echo "  stopped postgres"
  fi
  rm -rf "$base"; rm -f "$RUN/pgbase" "$RUN/credentials.env"
}

S3_ENV=(AWS_ACCESS_KEY_ID="$S3_KEY" AWS_SECRET_ACCESS_KEY="$S3_SECRET" AWS_DEFAULT_REGION=us-east-1)

dvc_remote_on() {
  [ -d "$ROOT/.dvc" ] || { echo "  (no .dvc/ here: DVC remote not configured)"; return 0; }
  local dvc="$BIN/dvc"
  "$dvc" remote add --local --force --default "$DVC_REMOTE" "s3://$DVC_BUCKET/store" > /dev/null
  "$dvc" remote modify --local "$DVC_REMOTE" endpointurl "$S3_URL"
  "$dvc" remote modify --local "$DVC_REMOTE" access_key_id "$S3_KEY"
  "$dvc" remote modify --local "$DVC_REMOTE" secret_access_key "$S3_SECRET"
  "$dvc" remote modify --local "$DVC_REMOTE" region us-east-1
  echo "  dvc default remote: $DVC_REMOTE -> s3://$DVC_BUCKET/store (in .dvc/config.local)"
}

dvc_remote_off() {
  [ -d "$ROOT/.dvc" ] && "$BIN/dvc" remote list --local 2>/dev/null | grep -q "^$DVC_REMOTE\b" || return 0
  "$BIN/dvc" remote remove --local "$DVC_REMOTE" > /dev/null && echo "  dvc remote $DVC_REMOTE removed (default remote is the project's again)"
}

print_env() {
  local llmrec_pw=""
  [ -f "$RUN/credentials.env" ] && llmrec_pw=$(sed -n 's/^LLMREC_DB_PASSWORD=//p' "$RUN/credentials.env")
  cat <<TXT
export LLMREC_BATCH_DATABASE_URL=postgresql+psycopg2://llmrec:$llmrec_pw@$HOST:$PG_PORT/llmrec
export PREFECT_API_URL=http://$HOST:$PREFECT_PORT/api
export MLFLOW_TRACKING_URI=http://$HOST:$MLFLOW_PORT
export AWS_ENDPOINT_URL=$S3_URL AWS_ACCESS_KEY_ID=$S3_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET AWS_DEFAULT_REGION=us-east-1
TXT
}

# --- commands --------------------------------------------------------------------------------
up() {
  mkdir -p "$RUN"
  local running=""
  for n in $SERVICES; do alive "$n" && running+=" $n"; done
  pg_running && running+=" postgres"
  if [ -n "$running" ]; then
    [ "$running" = " moto mlflow prefect postgres" ] && { echo "prodlike stack already running"; print_env; return 0; }
    die "partly running (${running# }): run '$0 down' first"
  fi
  [ -x "$BIN/mlflow" ] && [ -x "$BIN/moto_server" ] || die "$BIN lacks mlflow or moto_server: run 'make setup' (installs the prodlike extra)"
  for p in "$PG_PORT" "$S3_PORT" "$MLFLOW_PORT" "$PREFECT_PORT"; do
    port_free "$p" || die "port $p on $HOST is in use (make up's stack?): stop it or set PG_PORT/S3_PORT/MLFLOW_PORT/PREFECT_PORT"
  done
  [ -n "$(pg_base)" ] && pg_down   # leftovers of a crashed run: start clean
  trap 'rc=$?; [ "$rc" = 0 ] || { echo "prodlike: up failed: stopping what it started" >&2; down >&2; }' EXIT
  echo "starting the production-like stack"
  pg_up
  start moto env "${S3_ENV[@]}" "$BIN/moto_server" -H "$HOST" -p "$S3_PORT"
  wait_for moto "$S3_URL/moto-api/" 60
  env "${S3_ENV[@]}" "$BIN/python" - "$S3_URL" "$MLFLOW_BUCKET" "$DVC_BUCKET" <<'PY'
import sys
import boto3
url, *buckets = sys.argv[1:]
s3 = boto3.client("s3", endpoint_url=url)
for bucket in buckets:
    s3.create_bucket(Bucket=bucket)
print("  buckets:", ", ".join(b["Name"] for b in s3.list_buckets()["Buckets"]))
PY
  # shellcheck disable=SC1091
  . "$RUN/credentials.env"
  # MLflow: Postgres store, artifacts proxied to S3 (clients need no S3 credentials); the 2-core flags:
  # one uvicorn worker and no job-runner/huey consumers (~0.5 GB instead of ~2.6 GB).
  start mlflow env "${S3_ENV[@]}" MLFLOW_S3_ENDPOINT_URL="$S3_URL" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
    MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://mlflow:$MLFLOW_DB_PASSWORD@$HOST:$PG_PORT/mlflow" \
    MLFLOW_ARTIFACTS_DESTINATION="s3://$MLFLOW_BUCKET/artifacts" \
    "$BIN/mlflow" server --host "$HOST" --port "$MLFLOW_PORT" --workers 1
  start prefect env PREFECT_HOME="$STATE/prefect" \
    PREFECT_SERVER_DATABASE_CONNECTION_URL="postgresql+asyncpg://prefect:$PREFECT_DB_PASSWORD@$HOST:$PG_PORT/prefect" \
    "$BIN/prefect" server start --host "$HOST" --port "$PREFECT_PORT"
  wait_for mlflow "http://$HOST:$MLFLOW_PORT/health" 180
  wait_for prefect "http://$HOST:$PREFECT_PORT/api/health" 180
  dvc_remote_on
  cat <<TXT

llmrec production-like stack is up (Postgres + S3, ephemeral: 'down' deletes it)
  Prefect UI   http://$HOST:$PREFECT_PORT          backend postgresql+asyncpg://prefect@$HOST:$PG_PORT/prefect
  MLflow UI    http://$HOST:$MLFLOW_PORT          backend postgresql+psycopg2://mlflow@$HOST:$PG_PORT/mlflow
  S3 (moto)    $S3_URL         artifacts s3://$MLFLOW_BUCKET/artifacts, DVC remote s3://$DVC_BUCKET/store
  DB passwords $RUN/credentials.env      logs $RUN/*.log
Use it from a shell:   eval "\$($0 env)"   then e.g.  $BIN/llmrec retrain
$(print_env)
TXT
}

down() {
  echo "stopping the production-like stack"
  dvc_remote_off
  stop prefect; stop mlflow; stop moto   # clients first, then the stores
  pg_down
}

status() {
  for n in $SERVICES; do alive "$n" && echo "$n running (pid $(cat "$RUN/$n.pid"))" || echo "$n stopped"; done
  pg_running && echo "postgres running ($(pg_base)/data)" || echo "postgres stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  *) echo "usage: $0 up|down|status|env"; exit 2 ;;
esac
