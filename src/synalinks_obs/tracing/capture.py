"""Module inputs/outputs -> captured payloads, on the calling thread, without copying.

``capture_args`` / ``capture_kwargs`` / ``capture_value`` run inside the module call and
only take references: a pydantic data model itself (its ``get_json()`` is a
``model_dump``, done later on the exporter thread by ``export.payloads``), the JSON dict
of other data models (a reference, or its schema for symbolic data models), plain JSON
values. No copying, no ``json.dumps``. Nothing here raises for an odd value: it becomes a
short ``<TypeName>`` placeholder. What a value of a given type becomes is decided once per
type (``_Classes.kinds``): a call whose values are all kept as they are (plain values,
pydantic data models) costs a dict read per value, and its arguments are held as the
call's own tuple and keyword dict (``records.begin``'s, which nobody else holds).
"""

from __future__ import annotations

from synalinks_obs.compat import synalinks as synalinks_compat

_PRIMITIVES = (str, int, float, bool, type(None))


class _Classes:
    symbolic = None  # synalinks' SymbolicDataModel
    deferred = ()  # data model classes whose get_json() is deferred to the exporter
    # type -> what its values become: KEEP (a plain value, a deferred data model), JSON
    # (their ``get_json()``), or LOOK (``capture_value`` looks at the value): one
    # isinstance chain per type instead of per value (a pydantic class's is an ABC check).
    kinds: dict = {}


KEEP, JSON, LOOK = "keep", "json", "look"


CLASSES = _Classes()


def _load_classes() -> None:
    CLASSES.symbolic = synalinks_compat.symbolic_data_model_class()
    CLASSES.deferred = synalinks_compat.deferred_data_model_classes()
    CLASSES.kinds = {type(None): KEEP}


def _kind_of(cls) -> str:
    """What values of ``cls`` become (remembered per type, see ``_Classes.kinds``)."""
    classes = CLASSES
    if classes.symbolic is None:
        _load_classes()
    if issubclass(cls, _PRIMITIVES) or issubclass(cls, classes.deferred):
        kind = KEEP
    elif not issubclass(cls, classes.symbolic) and callable(getattr(cls, "get_json", None)):
        kind = JSON
    else:
        kind = LOOK
    classes.kinds[cls] = kind
    return kind


def capture_output(value):
    """What is kept of a call's output (``capture_value``'s first half, the common cases
    without a call)."""
    kind = CLASSES.kinds.get(type(value))
    if kind is KEEP:
        return value
    if kind is JSON:
        return value.get_json()
    return capture_value(value)[0]


def capture_value(value):
    """Return ``(captured, is_symbolic)`` for one argument or output (no copies made).

    A pydantic ``DataModel`` is kept as is (its JSON is computed on the exporter
    thread); other data models give their JSON dict (a reference), symbolic ones their
    schema; lists and tuples are captured item by item.
    """
    kind = CLASSES.kinds.get(type(value)) or _kind_of(type(value))
    if kind is KEEP:
        return value, False
    if kind is JSON:
        return value.get_json(), False  # JsonDataModel (a reference), Variable (scope-dependent)
    # (an instance whose __class__ is not its type, e.g. a proxy, is looked at here)
    if value is None or isinstance(value, _PRIMITIVES):
        return value, False
    classes = CLASSES
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


def capture_args(args) -> tuple[list | tuple, bool]:
    """Capture positional arguments; tell whether any was a symbolic data model.

    ``args`` itself (a tuple) when every value is kept as it is."""
    kinds = CLASSES.kinds
    if len(args) == 1:  # the common case: one data model
        arg = args[0]
        kind = kinds.get(type(arg))
        if kind is KEEP:
            return args, False
        if kind is JSON:
            return [arg.get_json()], False
    else:
        for arg in args:
            if kinds.get(type(arg)) is not KEEP:
                break
        else:
            return args, False
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
    """Capture keyword arguments: data models as JSON, JSON values as is, others by type.

    ``kwargs`` itself when every value is kept as it is: the caller's own dict, which
    nothing changes afterwards (the traced call's ``**kwargs``)."""
    kinds = CLASSES.kinds
    for value in kwargs.values():
        if kinds.get(type(value)) is not KEEP:
            break
    else:
        return kwargs
    return {key: capture_value(value)[0] for key, value in kwargs.items()}
