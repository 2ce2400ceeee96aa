# The official MLflow server image plus the PostgreSQL driver it lacks (mlflow/mlflow#9513).
# SQLAlchemy >= 2.1 opens postgresql:// URIs with psycopg 3, older versions with psycopg2:
# install both, whichever the image's SQLAlchemy picks is there.
FROM ghcr.io/mlflow/mlflow:latest
RUN pip install --no-cache-dir "psycopg[binary]" psycopg2-binary
