"""What an optimizer changed between two states of a program, readable by a person.

A state tree (``state.program_state``) holds, per trainable variable, what the optimizer
learned (the instructions, the few-shot ``examples``, a plan, a script...) beside its own
bookkeeping (predictions, candidates, counters: ``compat.synalinks``'s
``trainable_bookkeeping_fields``). ``learned`` keeps the former, ``diff`` compares two of
them per module (instructions rewritten, examples added or removed, any other field
changed) and ``render`` writes that as Markdown. Pure functions, no I/O.
"""

from __future__ import annotations

import json

from synalinks_obs.compat import synalinks as synalinks_compat

_MAX_VALUE_CHARS = 600


def _variables(tree, prefix="") -> dict:
    """``{variable path: {field: value}}`` of a nested state-tree group."""
    found: dict = {}
    if not isinstance(tree, dict):
        return found
    leaves = {k: v for k, v in tree.items() if not isinstance(v, dict)}
    if leaves:
        found[prefix.rstrip("/")] = leaves
    for key, value in tree.items():
        if isinstance(value, dict):
            found.update(_variables(value, f"{prefix}{key}/"))
    return found


def learned(state) -> dict:
    """``{variable path: {field: value}}``: what training learned, bookkeeping left out."""
    bookkeeping = synalinks_compat.trainable_bookkeeping_fields()
    variables = _variables((state or {}).get("trainable_variables") or {})
    return {
        path: {k: v for k, v in fields.items() if k not in bookkeeping}
        for path, fields in variables.items()
    }


def _key(example) -> str:
    if isinstance(example, dict):
        example = {k: v for k, v in example.items() if k != "reward"}
    return json.dumps(example, sort_keys=True, ensure_ascii=False, default=str)


def diff(before: dict, after: dict) -> list[dict]:
    """The changes from ``before`` to ``after`` (two ``learned`` states), per variable:
    ``{"module", "variable", "field", "kind", ...}`` with kind ``rewritten`` (text),
    ``changed`` (any other value), or ``examples`` (``added`` / ``removed`` lists)."""
    changes = []
    for path in sorted(set(before) | set(after)):
        old, new = before.get(path, {}), after.get(path, {})
        module, _, variable = path.rpartition("/")
        where = {"module": module or path, "variable": variable}
        for field in sorted(set(old) | set(new)):
            a, b = old.get(field), new.get(field)
            if field == "examples" and isinstance(a or [], list) and isinstance(b or [], list):
                keys_a = {_key(e) for e in a or []}
                keys_b = {_key(e) for e in b or []}
                added = [e for e in b or [] if _key(e) not in keys_a]
                removed = [e for e in a or [] if _key(e) not in keys_b]
                if added or removed:
                    changes.append({**where, "field": field, "kind": "examples",
                                    "added": added, "removed": removed})
            elif _key(a) != _key(b):
                kind = "rewritten" if isinstance(a, str) or isinstance(b, str) else "changed"
                changes.append({**where, "field": field, "kind": kind, "before": a, "after": b})
    return changes


def _short(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _MAX_VALUE_CHARS else text[:_MAX_VALUE_CHARS] + " [...]"


def _example(example) -> str:
    if isinstance(example, dict) and ("inputs" in example or "outputs" in example):
        reward = example.get("reward")
        scored = f" (reward {reward:g})" if isinstance(reward, (int, float)) else ""
        return f"{_short(example.get('inputs'))} -> {_short(example.get('outputs'))}{scored}"
    return _short(example)


def _quoted(text: str) -> list[str]:
    return [f"    > {line}" for line in (text.splitlines() or [""])]


def render(epoch: int, previous: str, changes: list[dict], scores: dict) -> str:
    """The Markdown diff of one epoch: its scores, then the changes per module."""
    lines = [f"# Epoch {epoch}: what the optimizer changed (since {previous})", ""]
    if scores:
        lines += [", ".join(f"{k} = {v:.4g}" for k, v in scores.items()), ""]
    module = None
    for change in changes:
        if change["module"] != module:
            module = change["module"]
            lines += [f"## {module}", ""]
        label = f"`{change['variable']}.{change['field']}`"
        if change["kind"] == "examples":
            lines.append(f"- {label}: {len(change['added'])} added, {len(change['removed'])} removed")
            lines += [f"  - added: {_example(e)}" for e in change["added"]]
            lines += [f"  - removed: {_example(e)}" for e in change["removed"]]
        else:
            lines.append(f"- {label} {change['kind']}:")
            lines += ["  - before:", *_quoted(_short(change["before"]))]
            lines += ["  - after:", *_quoted(_short(change["after"]))]
    if not changes:
        lines.append("Nothing learned changed.")
    return "\n".join(lines) + "\n"
