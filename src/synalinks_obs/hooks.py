"""Direct Monitor hook: trace one module (and its children) into its own experiment.

::

    from synalinks_obs.hooks import Monitor

    monitor = Monitor(tracking_uri="http://localhost:5000", experiment_name="custom_experiment")
    generator = synalinks.Generator(data_model=Answer, language_model=lm, hooks=[monitor])
    # or, on a module that already exists:  module.add_hook(monitor)

Every call of ``generator`` (and of the modules it calls, e.g. its ``LanguageModel``)
becomes a trace in ``custom_experiment`` at that tracking URI, exactly as global tracing
would record it: same span names, types, attributes, payload capture and cost. It works

- **without global tracing**: only the monitored modules and their children are traced;
- **alongside global tracing** (``SYNALINKS_OBSERVABILITY=1``, ``synalinks_obs.enable()``...):
  the monitored call leaves the enclosing trace and starts its own trace in the
  monitor's experiment. Each call is still **one** span, written to one place: never to
  both. Its ``synalinks.parent_call_id`` is still the call id of the enclosing module call
  (so the two traces can be joined), and its cost still counts in the enclosing calls'
  ``synalinks.cost``. When the monitor's destination is the enclosing trace's own, the
  call simply stays in that trace.

A monitored module called inside another monitored module's trace with a different
destination starts a trace of its own again: the innermost monitor wins for its subtree.

Why the hook itself does nothing: Synalinks runs hooks *inside* ``Module.__call__``, after
the call has begun, so a hook cannot choose where the call's span goes. Instead the
traced ``__call__`` wrapper asks ``synalinks_obs.tracing.routing``, which looks for a
``Monitor`` in the module's hook list when a call starts and opens the call's record in
the monitor's destination. The ``Monitor`` object only holds two strings: it deep-copies and pickles
with the module (no lock, logger or MLflow object on the instance).

Synalinks' own ``synalinks.hooks.Monitor`` on a module keeps doing what Synalinks
documents: it writes that module's calls into its experiment itself, and synalinks-obs
steps aside for those calls (never two spans for one call); their child calls are traced
by synalinks-obs as usual. Prefer this module's ``Monitor``: it records the whole
subtree, with synalinks-obs' attributes, payload limits and redaction.

Note: Synalinks' built-in modules such as ``Generator`` take no ``hooks=`` argument (only
``Module`` itself, language/embedding/decision models and your own subclasses that pass
``**kwargs`` on); ``module.add_hook(monitor)`` works on every module.
"""

from __future__ import annotations

from synalinks_obs import uris
from synalinks_obs.compat import synalinks as synalinks_compat

Hook = synalinks_compat.hook_class()

__all__ = ["Monitor"]


class Monitor(Hook):
    """Trace the module it is attached to, and its children, into its own experiment.

    Args:
        tracking_uri: MLflow tracking URI (a server ``http://host:5000``, ``sqlite:///...``
            or a path). Default: the tracking URI of global tracing when it is on, else
            ``MLFLOW_TRACKING_URI``, else MLflow's default store.
        experiment_name: MLflow experiment of the traces. Default: the experiment of global
            tracing when it is on, else ``MLFLOW_EXPERIMENT_NAME``, else
            ``synalinks_traces``.

    Pass it to a module as ``hooks=[monitor]`` or with ``module.add_hook(monitor)``. One
    monitor may be shared by several modules.
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str | None = None):
        super().__init__()
        if tracking_uri is not None and not isinstance(tracking_uri, str):
            raise TypeError(f"tracking_uri must be a string, not {type(tracking_uri).__name__}")
        if experiment_name is not None and (not isinstance(experiment_name, str) or not experiment_name):
            raise ValueError("experiment_name must be a non-empty string")
        self.tracking_uri = uris.absolute(tracking_uri) if tracking_uri else None
        self.experiment_name = experiment_name
        _activate()

    # Synalinks calls these inside Module.__call__; the routing happens earlier, in
    # synalinks_obs.tracing.routing (see the module docstring).
    def on_call_begin(self, call_id, parent_call_id=None, inputs=None, kwargs=None):
        return None

    def on_call_end(self, call_id, parent_call_id=None, outputs=None, exception=None):
        return None

    def synalinks_obs_destination(self) -> tuple:
        """``(tracking_uri, experiment_name)`` of this monitor's traces (None: default)."""
        return self.tracking_uri, self.experiment_name

    def __setstate__(self, state):
        # A monitor restored from a pickle (another process) must route there too.
        self.__dict__.update(state)
        _activate()

    def __repr__(self):
        return (
            f"<synalinks_obs.hooks.Monitor tracking_uri={uris.display(self.tracking_uri) if self.tracking_uri else None!r} "
            f"experiment_name={self.experiment_name!r}>"
        )


def _activate() -> None:
    """Make the traced wrapper consult monitors (once per process; never raises)."""
    from synalinks_obs import patching, reporting
    from synalinks_obs.runtime import RUNTIME

    try:
        patching.install(RUNTIME)  # no-op when global tracing already patched it
    except Exception as exc:  # the module runs untraced, the app goes on
        reporting.internal_error("activating the Monitor hook", exc)
