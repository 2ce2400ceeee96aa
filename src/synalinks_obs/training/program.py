"""What a program is made of, as plain data: name, modules, params, usage, graph.

Read-only introspection for the training log: ``describe_program`` (modules with their
class, schemas and trainable flag, and the edges between them, for the plots),
``program_params`` (what a run's params say about the program), ``lm_usage`` (the
all-time cost and tokens of its language models). Synalinks' internal names are read
through ``compat.synalinks``.
"""

from __future__ import annotations

import sys

from synalinks_obs.compat import synalinks as synalinks_compat


def program_name(program) -> str:
    name = getattr(program, "name", None) if program is not None else None
    return name if isinstance(name, str) and name else "program"


def program_description(program) -> str:
    try:
        description = getattr(program, "description", None)
    except Exception:
        return ""
    return description if isinstance(description, str) else ""


def synalinks_version() -> str:
    module = sys.modules.get("synalinks")
    return str(getattr(module, "__version__", "") or "")


def modules_of(program) -> list:
    return synalinks_compat.flatten_modules(program)


def program_params(program) -> dict:
    if program is None:
        return {}
    params = {
        "program_name": program_name(program),
        "program_class": type(program).__name__,
        "num_modules": len(modules_of(program)),
    }
    try:
        params["num_trainable_variables"] = len(program.trainable_variables)
    except Exception:
        pass
    reward = synalinks_compat.compiled_reward(program)
    if reward is not None:
        params["reward"] = getattr(reward, "name", None) or type(reward).__name__
    optimizer = getattr(program, "optimizer", None)
    if optimizer is not None:
        params.setdefault("optimizer", type(optimizer).__name__)
    names = synalinks_compat.compiled_metric_names(program)
    if names:
        params["metrics"] = ",".join(names)
    return params


def lm_usage(program):
    """All-time cost and tokens of the program's language/embedding models, or None."""
    if program is None:
        return None
    usages = [u for u in map(synalinks_compat.cumulated_usage, modules_of(program)) if u is not None]
    if not usages:
        return None
    return {"cost": sum(cost for cost, _ in usages), "tokens": sum(tokens for _, tokens in usages)}


def _schema_of(value):
    if value is None:
        return None
    get_schema = getattr(value, "get_schema", None)
    if get_schema is not None:
        return get_schema()
    if isinstance(value, (list, tuple)):
        return [_schema_of(item) for item in value]
    if isinstance(value, dict):
        return {key: _schema_of(item) for key, item in value.items()}
    return None


def _safe_schema(module, attribute):
    try:
        return _schema_of(getattr(module, attribute))
    except Exception:
        return None


def describe_program(program) -> dict:
    """The program as plain data: modules (name, class, schemas, trainable) and edges.

    Functional programs give their graph; a Sequential its chain; any other program its
    submodules, unconnected.
    """
    kind, modules, edges = synalinks_compat.program_graph(program)
    described = []
    for module in modules:
        variables = list(getattr(module, "variables", None) or [])
        described.append({
            "name": _text(getattr(module, "name", "")),
            "class": type(module).__name__,
            "description": _text(getattr(module, "description", "")),
            "trainable": bool(getattr(module, "trainable", False)) if variables else None,
            "num_variables": len(variables),
            "input_schema": None if type(module).__name__ == "InputModule"
            else _safe_schema(module, "input"),
            "output_schema": _safe_schema(module, "output"),
        })
    return {
        "name": program_name(program),
        "class": type(program).__name__,
        "kind": kind,
        "description": program_description(program),
        "modules": described,
        "edges": edges,
    }


def _text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))
