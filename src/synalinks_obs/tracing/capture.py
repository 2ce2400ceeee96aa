"""Module inputs/outputs -> captured payloads, on the calling thread, without copying.

``capture_args`` / ``capture_kwargs`` / ``capture_value`` run inside the module call and
only take references: a pydantic data model itself (its ``get_json()`` is a
``model_dump``, done later on the exporter thread by ``export.payloads``), the JSON dict
of other data models (a reference, or its schema for symbolic data models), plain JSON
values. No copying, no ``json.dumps``. Nothing here raises for an odd value: it becomes a
short ``<TypeName>`` placeholder.
"""

from __future__ import annotations

from synalinks_obs.compat import synalinks as synalinks_compat

_PRIMITIVES = (str, int, float, bool, type(None))


class _Classes:
    symbolic = None  # synalinks' SymbolicDataModel
    deferred = ()  # data model classes whose get_json() is deferred to the exporter


_CLASSES = _Classes()


def _load_classes() -> None:
    _CLASSES.symbolic = synalinks_compat.symbolic_data_model_class()
    _CLASSES.deferred = synalinks_compat.deferred_data_model_classes()


def capture_value(value):
    """Return ``(captured, is_symbolic)`` for one argument or output (no copies made).

    A pydantic ``DataModel`` is kept as is (its JSON is computed on the exporter
    thread); other data models give their JSON dict (a reference), symbolic ones their
    schema; lists and tuples are captured item by item.
    """
    if value is None or isinstance(value, _PRIMITIVES):
        return value, False
    classes = _CLASSES
    if classes.symbolic is None:
        _load_classes()
    if isinstance(value, classes.deferred):
        return value, False
    if isinstance(value, classes.symbolic):
        return value.get_schema(), True
    get_json = getattr(value, "get_json", None)
    if get_json is not None:
        return get_json(), False  # JsonDataModel (a reference), Variable (scope-dependent)
    if isinstance(value, (list, tuple)):
        items = []
        symbolic = False
        for item in value:
            captured, item_symbolic = capture_value(item)
            items.append(captured)
            symbolic = symbolic or item_symbolic
        return items, symbolic
    if isinstance(value, dict):
        return value, False
    return f"<{type(value).__name__}>", False


def capture_args(args) -> tuple[list, bool]:
    """Capture positional arguments; tell whether any was a symbolic data model."""
    items = []
    symbolic = False
    for arg in args:
        captured, arg_symbolic = capture_value(arg)
        items.append(captured)
        symbolic = symbolic or arg_symbolic
    return items, symbolic


def is_symbolic_call(args) -> bool:
    """Whether any positional argument is a symbolic data model (program building)."""
    return capture_args(args)[1]


def capture_kwargs(kwargs) -> dict:
    """Capture keyword arguments: data models as JSON, JSON values as is, others by type."""
    return {key: capture_value(value)[0] for key, value in kwargs.items()}
