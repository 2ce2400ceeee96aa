"""Everything synalinks-obs changes in code it does not own, applied through one registry.

``install(runtime)`` checks the installed Synalinks and MLflow against the supported
ranges (``versions``), then applies, idempotently and each through
``runtime.patches`` (``registry.PatchRegistry``): the traced ``Module.__call__``
(``module_call``) and streamed LM answers followed to their end (``streaming``), the
routing of Synalinks' own observability API (``synalinks_api``),
the 0.9.x LM-usage backport (``lm_usage``), the MLflow internals we replace
(``mlflow_hooks``) and the training autolog (``training.autolog``). ``uninstrument()``
reverts them all with ``runtime.patches.revert()``.
"""

from __future__ import annotations

from synalinks_obs import reporting
from synalinks_obs.patching import versions

_UNSUPPORTED_EFFECT = {
    "synalinks": "module calls are not traced",
    "mlflow": "nothing is traced",
}


def supported_versions() -> bool:
    """Whether Synalinks and MLflow are in range; one line for each that is not."""
    ok = True
    for distribution, effect in _UNSUPPORTED_EFFECT.items():
        version = versions.installed(distribution)
        if not versions.is_supported(distribution, version):
            ok = False
            reporting.say_once(
                f"synalinks-obs: {distribution} {version or '(not installed)'} is outside the "
                f"supported range {versions.describe(distribution)}; {effect}"
            )
    return ok


def install(runtime) -> bool:
    """Apply every patch (idempotent); False when a dependency is out of range."""
    if not supported_versions():
        return False
    from synalinks_obs.patching import lm_usage, mlflow_hooks, module_call, streaming, synalinks_api

    registry = runtime.patches
    module_call.install(registry)
    streaming.install(registry)
    synalinks_api.install(registry)
    lm_usage.install(registry)
    mlflow_hooks.install(registry)
    from synalinks_obs.tracing import routing

    routing.install()  # built-in Monitors write their modules' calls; ours route them
    try:
        # monitor registers its Monitor class with autolog when imported
        from synalinks_obs.training import autolog, monitor  # noqa: F401

        autolog.install(registry)
    except Exception as exc:  # tracing starts even if the training log cannot
        reporting.internal_error("installing the training autolog", exc)
    return True
