#!/usr/bin/env bash
# The README's main job: train end to end, then serve the champion and answer a request.
#
#   tools/run.sh                      # synthetic Kindle-like sample (clearly labelled)
#   tools/run.sh --input PATH [...]   # real data; any training_pipeline option may follow,
#                                     # e.g. --settings '{"kinds": "logreg", "trials": 4}'
#
# Runs the Flyte training pipeline locally (Spark local mode, MLflow on SQLite under
# runs/, Optuna, the Bento build), starts `bentoml serve` on the new Bento at
# 127.0.0.1:$PORT (default 3000), sends the three reviews of workflows/demo_reviews.py (clearly
# positive, clearly negative, mixed) and prints the answers. The service
# keeps running afterwards; its PID and log are printed. Idempotent: a second run
# re-uses Flyte's cache and restarts the service on the newest Bento.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
# shellcheck disable=SC1091
source .venv/bin/activate
port="${PORT:-3000}"
mkdir -p runs
export BENTOML_HOME="${BENTOML_HOME:-$PWD/runs/bentoml}"

pyflyte run workflows/pipeline.py training_pipeline "$@" 2>&1 | tee runs/training.log
tag=$(sed -n 's/^Bento tag: \([^ ]*\)$/\1/p' runs/training.log | tail -1)
if [ -z "$tag" ] || [ "$tag" = "(not" ]; then
  echo "run: the pipeline built no Bento (see runs/training.log)" >&2
  exit 1
fi

if [ -f runs/service.pid ] && kill -0 "$(cat runs/service.pid)" 2>/dev/null; then
  echo "run: stopping the previous service (pid $(cat runs/service.pid))"
  kill "$(cat runs/service.pid)" && sleep 2
fi
echo "run: serving $tag on http://127.0.0.1:$port (log: runs/service.log)"
BENTOML_CONFIG=services/configuration.yaml setsid nohup \
  bentoml serve "$tag" --host 127.0.0.1 --port "$port" > runs/service.log 2>&1 &
echo $! > runs/service.pid
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break
  sleep 1
done
curl -sf "http://127.0.0.1:$port/readyz" > /dev/null || { echo "run: service not ready, see runs/service.log" >&2; exit 1; }

python -m workflows.demo_reviews | while IFS=$'\t' read -r label request; do
  echo "run: POST /predict ($label) $request"
  curl -sf -X POST "http://127.0.0.1:$port/predict" -H 'content-type: application/json' -d "$request"
  echo
done
echo "run: the service is up (pid $(cat runs/service.pid)); stop it with: kill \$(cat runs/service.pid)"
