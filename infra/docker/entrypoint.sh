#!/bin/sh
# Entry point of the llmrec image, run before every command (servers, worker, flow runs):
#   LLMREC_DVC_REMOTE=s3://bucket/path  makes it the project's default DVC remote (.dvc/config.local);
#                                       AWS_ENDPOINT_URL is its endpoint (MinIO, any non-AWS S3);
#                                       credentials: the usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
#   LLMREC_DVC_PULL=1                   fetches the data snapshot data.dvc names, when the remote has it
# then runs the command.
set -eu
cd "${LLMREC_PROJECT_DIR:-/opt/llmrec}"
if [ -n "${LLMREC_DVC_REMOTE:-}" ]; then
  dvc remote add --local --force --default team "$LLMREC_DVC_REMOTE" > /dev/null
  if [ -n "${AWS_ENDPOINT_URL:-}" ]; then dvc remote modify --local team endpointurl "$AWS_ENDPOINT_URL"; fi
fi
if [ "${LLMREC_DVC_PULL:-0}" = 1 ]; then
  dvc pull data.dvc || echo "entrypoint: the DVC remote has no snapshot of data.dvc yet; data/ starts empty" >&2
fi
exec "$@"
