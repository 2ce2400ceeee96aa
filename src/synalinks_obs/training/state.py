"""The learned state of a program: saved as ``model/state_tree.json``, restored from a run.

``program_state`` is what ``Program.set_state_tree`` takes back (trainable and
non-trainable variables; optimizer and metric variables left out): every state a run
stores (the final one, each epoch's under ``model/epochs/<n>/``, the logged model's) is
made by it. ``stored_data`` is how training data a run stores (expected outputs,
dataset previews) is masked. ``model_info`` is the summary beside the state, and
``restore_state`` loads a run's state (final, or of an epoch) into a program built by the
same code (its modules may have other names: variables are matched by position).
"""

from __future__ import annotations

import copy
import json
import tempfile

from synalinks_obs.training.program import modules_of, program_description, program_name, synalinks_version

STATE_TREE_PATH = "model/state_tree.json"
MODEL_INFO_PATH = "model/model_info.json"
EPOCHS_PATH = "model/epochs"


def program_state(program) -> dict:
    """The program's variables as ``Program.set_state_tree`` takes them back.

    ``trainable_variables`` holds what training learns (few-shot examples, optimized
    instructions...); ``non_trainable_variables`` the rest of the program's state.
    Optimizer and metric variables are left out: they are not needed for inference. A
    copy: training goes on changing the program's own.
    """
    tree = program.get_state_tree()
    return copy.deepcopy({
        "trainable_variables": tree.get("trainable_variables", {}),
        "non_trainable_variables": tree.get("non_trainable_variables", {}),
    })


def stored_data(value):
    """Training data as a run stores it (dataset previews, expectations): masked like the
    spans, by the same policy (keys, value patterns, the user's function; the settings
    of tracing when it is on, else the environment's)."""
    from synalinks_obs.training import privacy

    return privacy.current_policy().value(value)


def model_info(program, run_id=None) -> dict:
    trainable = list(getattr(program, "trainable_variables", None) or [])
    non_trainable = list(getattr(program, "non_trainable_variables", None) or [])
    return {
        "name": program_name(program),
        "description": program_description(program),
        "class": type(program).__name__,
        "num_trainable_variables": len(trainable),
        "num_non_trainable_variables": len(non_trainable),
        "num_modules": len(modules_of(program)),
        "trainable_variables": [getattr(v, "path", "") for v in trainable],
        "synalinks_version": synalinks_version(),
        "run_id": run_id,
        "state_tree": STATE_TREE_PATH,
    }


def restore_state(program, run_id: str, tracking_uri: str | None = None, epoch=None) -> dict:
    """Load a run's learned state into ``program``; return the tree.

    ``epoch=None`` (the default): the final state, ``model/state_tree.json``. An epoch
    number (0-based, as the metrics' steps): the state validated in that epoch, i.e. the
    last ``model/epochs/<k>/state_tree.json`` with ``k <= epoch`` (a state is stored only
    for the epochs that changed it). ``epoch="best"``: the epoch tagged
    ``synalinks.best_epoch``. ``program`` is built by the same code as the trained one (its
    modules may have other names); afterwards its trainable variables equal the state's.
    """
    from mlflow.artifacts import download_artifacts

    path = STATE_TREE_PATH if epoch is None else _epoch_state_path(run_id, tracking_uri, epoch)
    with tempfile.TemporaryDirectory(prefix="synalinks-obs-restore-") as folder:
        local = download_artifacts(
            run_id=run_id, artifact_path=path, dst_path=folder, tracking_uri=tracking_uri,
        )
        with open(local, encoding="utf-8") as handle:
            state = json.load(handle)
    program.set_state_tree(_renamed_for(program, state))
    return state


def _epoch_state_path(run_id, tracking_uri, epoch) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    if epoch == "best":
        best = client.get_run(run_id).data.tags.get("synalinks.best_epoch")
        if best is None:
            raise ValueError(f"run {run_id} has no synalinks.best_epoch tag: pass an epoch number")
        epoch = int(best)
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise ValueError(f"epoch={epoch!r}: pass an epoch number (0-based), 'best' or None (final)")
    stored = []
    for item in client.list_artifacts(run_id, EPOCHS_PATH):
        name = item.path.rsplit("/", 1)[-1]
        if item.is_dir and name.isdigit() and int(name) <= epoch:
            stored.append(int(name))
    if not stored:
        raise ValueError(
            f"run {run_id} stored no epoch state up to epoch {epoch} (a state is stored for "
            "the epochs that changed it): pass a later epoch, or epoch=None for the final state"
        )
    return f"{EPOCHS_PATH}/{max(stored)}/state_tree.json"


_VARIABLE_GROUPS = ("trainable_variables", "non_trainable_variables")


def _fields_by_path(tree: dict) -> dict:
    """{variable path: {field: value}} of one group of a state tree, in its order."""
    fields: dict = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}/")
            else:
                fields.setdefault(prefix.rstrip("/"), {})[key] = value

    walk(tree, "")
    return fields


def _nested(fields: dict) -> dict:
    tree: dict = {}
    for path, values in fields.items():
        node = tree
        for part in path.split("/"):
            node = node.setdefault(part, {})
        node.update(values)
    return tree


def _renamed_for(program, state):
    """``state`` with its variables renamed to ``program``'s, matched by position.

    Synalinks 0.10 matches a program built under other module names by position itself;
    0.9.x matches by path only and silently skips the rest. Renaming first gives every
    version the same result; a tree of another shape is passed on unchanged.
    """
    if not isinstance(state, dict):
        return state
    renamed = dict(state)
    for group in _VARIABLE_GROUPS:
        saved_tree = state.get(group)
        variables = getattr(program, group, None)
        if not isinstance(saved_tree, dict) or not variables:
            continue
        saved = _fields_by_path(saved_tree)
        own = _fields_by_path(_nested({v.path: dict(v.get_json()) for v in variables}))
        if set(saved) == set(own) or len(saved) != len(own):
            continue
        if any(set(a) != set(b) for a, b in zip(saved.values(), own.values(), strict=True)):
            continue
        renamed[group] = _nested(
            {own_path: saved[saved_path] for saved_path, own_path in zip(saved, own, strict=True)}
        )
    return renamed
