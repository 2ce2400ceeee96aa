"""Synalinks' internal names (``synalinks.src.*``, underscore attributes), with fallbacks.

Public names (``synalinks.Module``, ``synalinks.hooks.Monitor``...) are preferred; where
only an internal one exists it is read here, guarded, and a missing one is reported once
through ``compat.note_fallback`` with what is lost. ``tests/unit/compat/`` breaks each
name and shows the app still runs. Every accessor imports Synalinks lazily (callers run
after ``import synalinks``).
"""

from __future__ import annotations

import sys

from synalinks_obs.compat import note_fallback

# Where Synalinks 0.9/0.10 define what we patch or read.
CONFIG_MODULE = "synalinks.src.backend.config"
HOOK_LIST_MODULE = "synalinks.src.hooks.hook_list"
# Where a module keeps its HookList (``Module._hooks``); ``tracing.child_calls`` reads it
# inline, as ``module_hooks`` does.
MODULE_HOOKS = "_hooks"
CALLBACK_LIST_MODULE = "synalinks.src.callbacks.callback_list"
LM_MODULE = "synalinks.src.modules.language_models.language_model"
TRAINER_MODULE = "synalinks.src.trainers.trainer"
LM_RETRY_METHOD = "_call_with_retry"  # 0.9.x: where the last attempt's error is raised


def _module_of(obj):
    return sys.modules.get(getattr(obj, "__module__", "") or "")


def module_class():
    """``synalinks.Module``."""
    import synalinks

    return synalinks.Module


def symbolic_data_model_class():
    import synalinks

    found = getattr(synalinks, "SymbolicDataModel", None)
    if found is None:
        note_fallback("synalinks.SymbolicDataModel", "symbolic calls are not told apart")
        return type("_NoSymbolicDataModel", (), {})
    return found


def deferred_data_model_classes() -> tuple:
    """Data model classes whose JSON may be computed later, on the exporter thread."""
    import synalinks

    found = getattr(synalinks, "DataModel", None)
    return (found,) if isinstance(found, type) else ()


def config_module():
    """The module that defines ``enable_observability`` (its globals are the flag)."""
    import synalinks

    function = getattr(synalinks, "enable_observability", None)
    return _module_of(function) or sys.modules.get(CONFIG_MODULE)


def record_observability_config(tracking_uri, experiment_name) -> None:
    """Keep what ``synalinks.enable_observability(...)`` was given in Synalinks' own config
    (its built-in ``Monitor`` hooks and callbacks read their defaults there), without
    turning Synalinks' own flag on."""
    config = config_module()
    for name, value in (("_MLFLOW_TRACKING_URI", tracking_uri), ("_MLFLOW_EXPERIMENT_NAME", experiment_name)):
        if not value:
            continue
        if config is None or not hasattr(config, name):
            note_fallback(f"{CONFIG_MODULE}.{name}", "Synalinks' built-in Monitors keep their own defaults")
            continue
        setattr(config, name, value)


def hook_list_module():
    """The module whose ``is_observability_enabled`` makes ``HookList`` add a Monitor."""
    module = sys.modules.get(HOOK_LIST_MODULE)
    if module is None:
        import synalinks

        module = _module_of(getattr(getattr(synalinks, "hooks", None), "HookList", None))
    return module


def callback_list_module():
    """The module whose ``is_observability_enabled`` makes ``CallbackList`` add a Monitor."""
    module = sys.modules.get(CALLBACK_LIST_MODULE)
    if module is None:
        import synalinks

        module = _module_of(getattr(getattr(synalinks, "callbacks", None), "CallbackList", None))
    return module


def hook_class():
    import synalinks

    return synalinks.hooks.Hook


def builtin_hook_monitor_class():
    """Synalinks' own ``synalinks.hooks.Monitor`` (None if it has none)."""
    import synalinks

    return getattr(getattr(synalinks, "hooks", None), "Monitor", None)


def callback_class():
    import synalinks

    return synalinks.callbacks.Callback


def callback_list_class():
    import synalinks

    return synalinks.callbacks.CallbackList


def builtin_callback_monitor_class():
    """Synalinks' own ``synalinks.callbacks.Monitor`` (None if it has none)."""
    import synalinks

    return getattr(getattr(synalinks, "callbacks", None), "Monitor", None)


def module_hooks(module) -> list:
    """The hooks attached to a module instance (``Module._hooks.hooks``). Every module
    Synalinks builds has that HookList: a module without it means the name moved, noted
    once (a Monitor hook on a module is then not seen; its calls are traced as others)."""
    hook_list = module.__dict__.get(MODULE_HOOKS)
    if hook_list is None:
        note_fallback(f"Module.{MODULE_HOOKS}", "Monitor hooks on modules are not seen: their calls are traced like any other")
        return ()
    return getattr(hook_list, "hooks", None) or ()


def trainer_class():
    """The class that defines ``fit`` and ``evaluate`` for programs."""
    module = sys.modules.get(TRAINER_MODULE)
    trainer = getattr(module, "Trainer", None)
    if trainer is not None:
        return trainer
    import synalinks

    for klass in synalinks.Program.__mro__:
        if "fit" in klass.__dict__ and "evaluate" in klass.__dict__:
            note_fallback(f"{TRAINER_MODULE}.Trainer", f"fit() is patched on {klass.__qualname__}")
            return klass
    return None


def language_model_module():
    """The module defining ``LanguageModel`` (and, from 0.10, ``current_call_usage``)."""
    import synalinks

    return _module_of(synalinks.LanguageModel) or sys.modules.get(LM_MODULE)


def current_call_usage_of(cls):
    """``current_call_usage`` of the LM family ``cls`` belongs to (None if it has none)."""
    for klass in cls.__mro__:
        if klass.__name__ in ("LanguageModel", "DecisionModel", "EmbeddingModel") and (
            klass.__module__.startswith("synalinks.")
        ):
            return getattr(sys.modules.get(klass.__module__), "current_call_usage", None)
    return None


def streaming_iterator_class():
    """``StreamingIterator``: what a ``LanguageModel`` called with ``streaming=True``
    returns (None on a Synalinks without streaming: nothing to follow)."""
    module = language_model_module()
    found = getattr(module, "StreamingIterator", None) if module is not None else None
    if found is None or not hasattr(found, "__anext__"):
        return None
    return found


def streamed_usage(stream) -> dict | None:
    """The usage of a streamed LM answer read to its end, as LiteLLM reports a streamed
    call (``litellm.stream_chunk_builder`` over LiteLLM's raw chunks: the provider's usage
    chunk, or LiteLLM's own token count) and prices it; None if it cannot be told."""
    wrapper = getattr(stream, "_iterator", None)
    chunks = getattr(wrapper, "chunks", None)
    if not isinstance(chunks, list):
        note_fallback(
            "StreamingIterator._iterator.chunks",
            "streamed LM calls are recorded without token usage and cost",
        )
        return None
    if not chunks:
        return None
    import litellm

    response = litellm.stream_chunk_builder(chunks=list(chunks), messages=getattr(wrapper, "messages", None))
    usage = getattr(response, "usage", None)
    if usage is None:
        return None
    prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion = int(getattr(usage, "completion_tokens", 0) or 0)
    found = {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": int(getattr(usage, "total_tokens", 0) or prompt + completion),
    }
    try:
        found["cost"] = float(litellm.completion_cost(completion_response=response))
    except Exception:  # a model LiteLLM has no price for
        pass
    return found


def last_call_usage(lm) -> dict:
    """0.9.x: the usage of an LM's last call, kept on the instance."""
    prompt = getattr(lm, "last_call_prompt_tokens", 0) or 0
    completion = getattr(lm, "last_call_completion_tokens", 0) or 0
    return {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": getattr(lm, "last_call_tokens", 0) or prompt + completion,
        "cost": getattr(lm, "last_call_cost", None),
    }


def call_counters(lm) -> tuple[int, int]:
    """0.9.x: (calls, failed calls) an LM has made so far."""
    return getattr(lm, "cumulated_calls", 0), getattr(lm, "cumulated_failed_calls", 0)


def cumulated_usage(lm) -> tuple[float, float] | None:
    """(all-time cost, all-time tokens) of an LM, or None for a module that has none."""
    if not hasattr(lm, "cumulated_cost"):
        return None
    return float(getattr(lm, "cumulated_cost", 0) or 0), float(getattr(lm, "cumulated_tokens", 0) or 0)


def flatten_modules(program, recursive: bool = True) -> list:
    """The modules of a program (not itself), depth first."""
    try:
        return list(program._flatten_modules(include_self=False, recursive=recursive))
    except AttributeError as exc:
        note_fallback("Module._flatten_modules", "the program's modules are read from .modules", exc)
    except Exception:
        return []
    try:
        return list(getattr(program, "modules", None) or [])
    except Exception:
        return []


def direct_modules(program) -> list:
    """The modules a program holds directly (``Module._modules``)."""
    return list(getattr(program, "_modules", None) or [])


def compiled_reward(program):
    """The reward given to ``compile()`` (None before it)."""
    return getattr(program, "reward", None) or getattr(program, "_compile_reward", None)


def compiled_metric_names(program) -> list[str]:
    """Names of the metrics given to ``compile()`` (before the first batch too: Synalinks
    builds its ``CompileMetrics`` then, and lists none until it has)."""
    try:
        compiled = program._compile_metrics
        if compiled is None:
            return []
        names = [m.name for m in compiled.metrics]
        if names:
            return names
        given = compiled._user_metrics
        if isinstance(given, dict):
            given = list(given.values())
        flat = []
        for item in given or ():
            flat.extend(item if isinstance(item, (list, tuple)) else [item])
        return [m if isinstance(m, str) else getattr(m, "name", type(m).__name__) for m in flat if m is not None]
    except Exception:
        return []


def program_graph(program) -> tuple[str, list, list]:
    """``(kind, modules, edges)`` of a program: a Functional program's graph (edges as
    index pairs), a Sequential's chain, or any other program's direct modules."""
    kind, modules, edges = "other", [], []
    try:
        from synalinks.src.programs import functional, sequential

        if isinstance(program, functional.Functional):
            kind, modules = "functional", list(program._operations)
        elif isinstance(program, sequential.Sequential):
            kind, modules = "sequential", direct_modules(program)
    except Exception as exc:
        note_fallback("synalinks.src.programs", "program plots show modules without edges", exc)
        kind = "other"
    if not modules:
        kind, modules = "other", flatten_modules(program, recursive=False)
    index = {id(module): i for i, module in enumerate(modules)}
    if kind == "sequential":
        edges = [(i, i + 1) for i in range(len(modules) - 1)]
    elif kind == "functional":
        try:
            from synalinks.src.ops.function import make_node_key

            for module in modules:
                for i, node in enumerate(module._inbound_nodes):
                    if make_node_key(module, i) not in program._nodes:
                        continue
                    for parent in node.parent_nodes:
                        source = index.get(id(parent.operation))
                        edge = (source, index[id(module)])
                        if source is not None and edge not in edges:
                            edges.append(edge)
        except Exception as exc:
            note_fallback("the graph of Functional programs", "program plots show no edges", exc)
            edges = []
    return kind, modules, edges


def program_visualization():
    """``synalinks.src.utils.program_visualization`` (None when missing)."""
    try:
        from synalinks.src.utils import program_visualization as found
    except Exception as exc:
        note_fallback("synalinks.src.utils.program_visualization", "no PNG program plot", exc)
        return None
    return found


# -- training: per-example scores, datasets, learned prompts --------------------------------

def mean_metric_wrapper_class():
    """``synalinks.metrics.MeanMetricWrapper`` (None if it has none)."""
    import synalinks

    found = getattr(getattr(synalinks, "metrics", None), "MeanMetricWrapper", None)
    if found is None:
        note_fallback("synalinks.metrics.MeanMetricWrapper", "compiled metrics give no per-example feedback")
    return found


def mean_metric_state(metric) -> tuple[float, int] | None:
    """``(total, count)`` of a Mean metric (its ``total_with_count`` variable), or None."""
    variable = getattr(metric, "total_with_count", None)
    try:
        return float(variable.get("total")), int(variable.get("count"))
    except Exception as exc:
        note_fallback("Mean.total_with_count", "compiled metrics give no per-example feedback", exc)
        return None


def training_inputs(program, kind: str) -> dict | None:
    """The data of the ``fit()`` (``x``, ``y``, ``val_x``, ``val_y``: ``Trainer._fit_inputs``,
    after the validation split) or ``evaluate()`` (``x``, ``y``: ``_eval_inputs``) in
    progress, or None when this Synalinks version does not expose it."""
    name = "_fit_inputs" if kind == "fit" else "_eval_inputs"
    if name not in getattr(program, "__dict__", {}):
        note_fallback(f"Trainer.{name}", "the datasets logged are the fit()/evaluate() arguments")
        return None
    found = getattr(program, name)
    return found if isinstance(found, dict) else None


def trainable_bookkeeping_fields() -> frozenset[str]:
    """Fields of ``synalinks.Trainable`` that optimizers keep for themselves (predictions,
    candidates, counters): everything but the few-shot ``examples``."""
    import synalinks

    trainable = getattr(synalinks, "Trainable", None)
    fields = getattr(trainable, "model_fields", None)
    if not fields:
        note_fallback("synalinks.Trainable", "epoch diffs compare Synalinks 0.10's trainable fields")
        fields = (
            "examples", "current_predictions", "predictions", "seed_candidates", "candidates",
            "best_candidates", "history", "nb_visit", "cumulative_reward",
        )
    return frozenset(fields) - {"examples"}


def system_prompt(module) -> str | None:
    """The system prompt a Generator-like module renders from its learned state
    (``_render_system_message``), or None for a module that renders none."""
    render = getattr(module, "_render_system_message", None)
    if render is None:
        if getattr(module, "prompt_template", None) is not None:  # a Generator that moved on
            note_fallback("Generator._render_system_message", "learned prompts are not registered")
        return None
    inputs = None
    if getattr(module, "use_inputs_schema", False):
        schema = None
        try:
            schema = module.input.get_schema()
        except Exception:
            pass
        if schema is None:
            return None
        inputs = symbolic_data_model_class()(schema=schema)
    try:
        message = render(inputs)
    except Exception as exc:
        note_fallback("Generator._render_system_message", "learned prompts are not registered", exc)
        return None
    content = getattr(message, "content", None)
    if content is None and hasattr(message, "get"):
        content = message.get("content")
    return content if isinstance(content, str) else None
