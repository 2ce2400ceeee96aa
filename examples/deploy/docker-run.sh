#!/usr/bin/env bash
# An MLflow tracking server in one container, with the artifact proxy on (the seed's
# "Using Docker" set-up). Data (sqlite store + artifacts) lives in the `mlflow-data` volume.
# No authentication: published on this machine only (127.0.0.1); for other machines see
# docker-compose.auth.yml and docker-compose.tls-proxy.yml.
#
#   examples/deploy/docker-run.sh            then  http://localhost:5000
#   MLFLOW_PORT=5001 examples/deploy/docker-run.sh
#
# Apps then trace into it with
#   MLFLOW_TRACKING_URI=http://localhost:5000 SYNALINKS_OBSERVABILITY=1 python app.py
# and `python -m synalinks_obs doctor --tracking-uri http://localhost:5000` checks it.
set -euo pipefail

docker run -d \
    --name mlflow \
    -p "127.0.0.1:${MLFLOW_PORT:-5000}:5000" \
    -v mlflow-data:/mlflow \
    ghcr.io/mlflow/mlflow:latest \
    mlflow server \
    --host 0.0.0.0 \
    --port 5000 \
    --backend-store-uri sqlite:///mlflow/mlflow.db \
    --default-artifact-root mlflow-artifacts:/ \
    --serve-artifacts \
    --artifacts-destination /mlflow/artifacts
