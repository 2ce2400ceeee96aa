"""The data a run trained, validated or evaluated on, as the run's MLflow dataset inputs.

``describe(x, y, name)`` turns arrays of data models into an ``mlflow.entities.Dataset``:
its name, a digest of every row (the same data gives the same digest, run after run), the
row count as its profile, and its schema: one MLflow column per field of ``x`` and ``y``
(what the run page's dataset panel lists) plus the data models' JSON schemas themselves
(``{"mlflow_colspec": [...], "synalinks": {"x": ..., "y": ...}}``). ``log`` adds them to the
run with MLflow's own ``log_inputs``, each tagged with its context (``training``,
``validation``, ``evaluation``). The rows themselves are not in the dataset entity: a
bounded preview (``preview_rows``, the first rows, masked like the spans) is stored beside
it as ``datasets/<context>.json``; ``preview_rows=None`` stores every row.
"""

from __future__ import annotations

import hashlib
import json
from typing import NamedTuple

from synalinks_obs.training.state import stored_data

CONTEXT_TAG = "mlflow.data.context"  # MLflow's own tag for a dataset input's role
_JSON_TO_MLFLOW = {"string": "string", "integer": "long", "number": "double", "boolean": "boolean"}


class Described(NamedTuple):
    dataset: object  # mlflow.entities.Dataset
    context: str
    preview: dict


def _json(value):
    get_json = getattr(value, "get_json", None)
    if get_json is not None:
        return get_json()
    if isinstance(value, (list, tuple)):
        return [_json(item) for item in value]
    return value


def _schema(values):
    for value in values if values is not None else ():
        get_schema = getattr(value, "get_schema", None)
        if get_schema is not None:
            try:
                return get_schema()
            except Exception:
                return None
        return None
    return None


def _columns(prefix: str, schema) -> list[dict]:
    if not isinstance(schema, dict):
        return []
    required = set(schema.get("required") or [])
    columns = []
    for field, spec in (schema.get("properties") or {}).items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        columns.append({
            "name": f"{prefix}.{field}",
            "type": _JSON_TO_MLFLOW.get(kind, kind if isinstance(kind, str) else "object"),
            "required": field in required,
        })
    return columns


def _rows(x, y) -> list:
    size = len(x)
    ys = list(y) if y is not None else [None] * size
    return [(x[i], ys[i] if i < len(ys) else None) for i in range(size)]


def describe(x, y, name: str, context: str, source: str, preview_rows: int | None) -> Described | None:
    """The dataset entity of ``(x, y)`` and its preview; None when there is no data."""
    if x is None or not hasattr(x, "__len__") or len(x) == 0:
        return None
    from mlflow.entities import Dataset

    digest = hashlib.sha256()
    rows = _rows(x, y)
    for inputs, expected in rows:
        row = json.dumps([_json(inputs), _json(expected)], sort_keys=True, ensure_ascii=False, default=str)
        digest.update(row.encode("utf-8"))
        digest.update(b"\n")
    x_schema, y_schema = _schema(x), _schema(y)
    schema = {
        "mlflow_colspec": _columns("x", x_schema) + _columns("y", y_schema),
        "synalinks": {"x": x_schema, "y": y_schema},
    }
    shown = rows if preview_rows is None else rows[: max(0, int(preview_rows))]
    dataset = Dataset(
        name=name,
        digest=digest.hexdigest()[:16],
        source_type="code",
        source=json.dumps({"tags": {"synalinks.program": source}}),
        schema=json.dumps(schema, default=str),
        profile=json.dumps({"num_rows": len(rows)}),
    )
    preview = {
        "name": name,
        "context": context,
        "digest": dataset.digest,
        "num_rows": len(rows),
        "preview_rows": len(shown),
        "rows": [{"x": stored_data(_json(a)), "y": stored_data(_json(b))} for a, b in shown],
    }
    return Described(dataset, context, preview)


def log(client, run_id: str, described: list[Described]) -> None:
    """Add the datasets to the run's inputs, each tagged with its context."""
    from mlflow.entities import DatasetInput, InputTag

    inputs = [
        DatasetInput(dataset=item.dataset, tags=[InputTag(key=CONTEXT_TAG, value=item.context)])
        for item in described
    ]
    if inputs:
        client.log_inputs(run_id, datasets=inputs)
