"""The trained program as an MLflow model (pyfunc flavour), stored under the run's ``model/``.

``save_program_model(program, path)`` writes an MLflow model directory with
``mlflow.pyfunc.save_model``: the program saved by Synalinks (``Program.save``: its
architecture, with the run's stored state, masked, as its variables) as the
``program`` artifact, ``ProgramModel`` as the python model (models from code:
``model_code.py``, nothing pickled), and a signature made from the
program's input and output JSON schemas (one column per top-level field). The Monitor
uploads it to the run's ``model/`` beside ``state_tree.json``, so

    mlflow.pyfunc.load_model(f"runs:/{run_id}/model").predict({"question": "..."})

rebuilds the program with its learned state and answers like the trained one: a list of
output dicts, one per input row (``None`` for a call that returned nothing). ``predict``
is synchronous: it runs the program's async calls on one event loop of its own (a daemon
thread), which works whether or not the caller has a loop running, and keeps the LM
client's connections between calls. Custom ``Module`` or ``DataModel`` subclasses are
found by their import path, so the code declaring them must be importable where the model
is loaded; the language model's key comes from that environment too (never stored).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import warnings

import mlflow.pyfunc

PROGRAM_ARTIFACT = "program"
_JSON_TO_MLFLOW = {"string": "string", "integer": "long", "number": "double", "boolean": "boolean"}


class _Loop:
    """One daemon thread running an event loop for the model's async calls."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="synalinks-obs-model", daemon=True).start()

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()


def _records(model_input) -> list:
    if hasattr(model_input, "to_dict"):  # a pandas DataFrame
        return model_input.to_dict(orient="records")
    if isinstance(model_input, dict):
        return [model_input]
    return list(model_input)


class ProgramModel(mlflow.pyfunc.PythonModel):
    """A Synalinks program as an MLflow pyfunc model (see the module docstring)."""

    # Inputs and outputs are checked against the signature made from the program's JSON
    # schemas; no type hint on predict could describe them.
    _skip_type_hint_validation = True

    def load_context(self, context):
        import synalinks

        self.program = synalinks.Program.load(context.artifacts[PROGRAM_ARTIFACT])
        self._loop = _Loop()

    async def _answer(self, records):
        import synalinks

        schema = getattr(self.program, "input_schema", None)
        inputs = [synalinks.JsonDataModel(json=record, schema=schema) for record in records]
        return await asyncio.gather(*(self.program(item) for item in inputs))

    def predict(self, context, model_input, params=None):
        outputs = self._loop.run(self._answer(_records(model_input)))
        return [output.get_json() if output is not None else None for output in outputs]


def _columns(schema):
    from mlflow.types import ColSpec, Schema

    if not isinstance(schema, dict) or not schema.get("properties"):
        return None
    required = set(schema.get("required") or [])
    columns = []
    for name, spec in schema["properties"].items():
        kind = _JSON_TO_MLFLOW.get(spec.get("type") if isinstance(spec, dict) else None)
        if kind is None:
            return None  # nested or mixed values: no column type says it, no signature
        columns.append(ColSpec(kind, name=name, required=name in required))
    return Schema(columns)


def signature_of(program):
    """The model signature from the program's input/output JSON schemas (None if they
    have fields no MLflow column type describes)."""
    from mlflow.models import ModelSignature

    inputs = _columns(getattr(program, "input_schema", None))
    if inputs is None:
        return None
    return ModelSignature(inputs=inputs, outputs=_columns(getattr(program, "output_schema", None)))


@contextlib.contextmanager
def _no_progress_bar():
    """MLflow copies the model's artifacts with its download progress bar: not on the
    user's terminal at the end of every training."""
    from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR

    name = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    before = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def save_program_model(program, path: str, work_dir: str, state: dict) -> None:
    """Write the MLflow model of ``program`` to ``path`` (which must not exist yet), with
    ``state`` (the run's stored state: masked, see ``training.privacy``) as its variables."""
    import synalinks

    program_file = os.path.join(work_dir, "program.json")
    program.save(program_file)
    with open(program_file, encoding="utf-8") as handle:
        saved = json.load(handle)
    saved["variables"] = state  # the state a run stores, nothing more
    with open(program_file, "w", encoding="utf-8") as handle:
        json.dump(saved, handle, ensure_ascii=False)
    version = getattr(synalinks, "__version__", None)
    with warnings.catch_warnings(), _no_progress_bar():
        # No input example on purpose: MLflow would run the program (LM calls) to check it.
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        mlflow.pyfunc.save_model(
            path,
            python_model=os.path.join(os.path.dirname(__file__), "model_code.py"),
            artifacts={PROGRAM_ARTIFACT: program_file},
            signature=signature_of(program),
            pip_requirements=[f"synalinks=={version}" if version else "synalinks", "synalinks-obs"],
        )
