#!/bin/sh
# One role and one database each for Prefect, MLflow and llmrec's batch lists: run by the compose Postgres on its first
# start (docker-entrypoint-initdb.d) and by infra/prodlike/stack.sh on its private cluster.
# The passwords come from the container's environment (infra/.env), never from this file.
set -eu
psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v prefect_pw="$PREFECT_DB_PASSWORD" -v mlflow_pw="$MLFLOW_DB_PASSWORD" -v llmrec_pw="$LLMREC_DB_PASSWORD" <<'SQL'
CREATE ROLE prefect LOGIN PASSWORD :'prefect_pw';
CREATE DATABASE prefect OWNER prefect;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;
CREATE ROLE llmrec LOGIN PASSWORD :'llmrec_pw';
CREATE DATABASE llmrec OWNER llmrec;
SQL
