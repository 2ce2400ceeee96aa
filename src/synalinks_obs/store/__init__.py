"""Everything that talks to a tracking store: writing spans and checking the store.

``writer`` (batches, backoff, drops), ``worker`` (the exporter process) and its
``protocol``, ``mlflow_spans`` (a ``Wire`` -> MLflow's span), ``experiments``,
``health`` (through MLflow's REST helper) and ``schema_lock``.
"""
