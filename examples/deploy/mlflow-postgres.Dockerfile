# The official MLflow server image plus what it lacks: the PostgreSQL driver
# (mlflow/mlflow#9513) and Flask-WTF for the basic-auth app (mlflow[auth]).
# SQLAlchemy >= 2.1 opens postgresql:// URIs with psycopg 3, older versions with psycopg2:
# install both, whichever the image's SQLAlchemy picks is there.
FROM ghcr.io/mlflow/mlflow:latest
RUN pip install --no-cache-dir "psycopg[binary]" psycopg2-binary Flask-WTF
