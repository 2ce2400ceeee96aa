"""The module-class -> MLflow span-type table (SPEC section 3), matched through the MRO.

A user subclass of ``Generator`` is an ``LLM`` span; a class that derives from none of
the listed Synalinks classes is a ``CHAIN``. Lookups are cached per class, so the table
costs one dict read per call.
"""

from __future__ import annotations

# Class name (as defined by Synalinks) -> MLflow span type.
SPAN_TYPE_BY_CLASS_NAME = {
    "Generator": "LLM",
    "ChainOfThought": "LLM",
    "SelfCritique": "LLM",
    "FunctionCallingAgent": "AGENT",
    "EmbedKnowledge": "RETRIEVER",
    "RetrieveKnowledge": "RETRIEVER",
    "UpdateKnowledge": "RETRIEVER",
    "Tool": "TOOL",
    "LanguageModel": "CHAT_MODEL",
    "DecisionModel": "CHAT_MODEL",
    "EmbeddingModel": "EMBEDDING",
}
DEFAULT_SPAN_TYPE = "CHAIN"

# class -> span type, filled by ``span_type_for`` (read directly on the hot path)
SPAN_TYPES: dict[type, str] = {}


def _is_synalinks_class(cls: type) -> bool:
    return (getattr(cls, "__module__", "") or "").startswith("synalinks.")


def span_type_for(cls: type) -> str:
    """Return the MLflow span type for a module class (nearest listed ancestor wins)."""
    found = SPAN_TYPES.get(cls)
    if found is None:
        found = DEFAULT_SPAN_TYPE
        for klass in cls.__mro__:
            span_type = SPAN_TYPE_BY_CLASS_NAME.get(klass.__name__)
            if span_type is not None and _is_synalinks_class(klass):
                found = span_type
                break
        SPAN_TYPES[cls] = found
    return found
