"""The learned state of a program: saved as ``model/state_tree.json``, restored from a run.

``program_state`` is what ``Program.set_state_tree`` takes back (trainable and
non-trainable variables; optimizer and metric variables left out), ``model_info`` the
summary beside it, and ``restore_state`` loads a run's state into a program built by the
same code (its modules may have other names: variables are matched by position).
"""

from __future__ import annotations

import json
import tempfile

from synalinks_obs.training.program import modules_of, program_description, program_name, synalinks_version

STATE_TREE_PATH = "model/state_tree.json"
MODEL_INFO_PATH = "model/model_info.json"


def program_state(program) -> dict:
    """The program's variables as ``Program.set_state_tree`` takes them back.

    ``trainable_variables`` holds what training learns (few-shot examples, optimized
    instructions...); ``non_trainable_variables`` the rest of the program's state.
    Optimizer and metric variables are left out: they are not needed for inference.
    """
    tree = program.get_state_tree()
    return {
        "trainable_variables": tree.get("trainable_variables", {}),
        "non_trainable_variables": tree.get("non_trainable_variables", {}),
    }


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


def restore_state(program, run_id: str, tracking_uri: str | None = None) -> dict:
    """Load ``model/state_tree.json`` of an MLflow run into ``program``; return the tree.

    ``program`` is built by the same code as the trained one (its modules may have other
    names); afterwards its trainable variables equal the trained program's.
    """
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory(prefix="synalinks-obs-restore-") as folder:
        path = download_artifacts(
            run_id=run_id, artifact_path=STATE_TREE_PATH, dst_path=folder,
            tracking_uri=tracking_uri,
        )
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    program.set_state_tree(_renamed_for(program, state))
    return state


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
