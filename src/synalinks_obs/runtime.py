"""The one owner of synalinks-obs' running state in a process: ``RUNTIME``.

Everything that lives as long as the process and changes while it runs is an attribute
of this one object, never a module-level global elsewhere: the activation in force, the
tracer the patched ``Module.__call__`` reads on every call, the Monitor-hook router, the
process-wide exporter, the registry of every patch applied, and the traces and training
runs in progress. ``synalinks_obs.activation`` changes it; the rest of the package reads
it. Standard library only, and nothing else at import: start-up code imports it.
"""

from _thread import RLock
from weakref import WeakKeyDictionary


class Runtime:
    """The running state (see the module docstring); one instance, ``RUNTIME``."""

    def __init__(self):
        self.lock = RLock()  # activation changes (enable, disable, the import hook)
        # -- the activation ------------------------------------------------------------
        self.settings = None  # Settings of the activation in force; None: off
        self.source = None  # how it was turned on: "enable()", "env", "run", "synalinks"
        self.pending = None  # options of a start-up activation waiting for `import synalinks`
        # Options of a routed synalinks.enable_observability(...) that shape the training
        # runs autolog opens (run_name, log_program_model...).
        self.training_options: dict = {}
        # -- read on every module call ------------------------------------------------
        self.tracer = None  # the global Tracer while tracing is on; None: pass-through
        self.route = None  # the Monitor-hook router once a hook exists or tracing starts
        # -- owned services -------------------------------------------------------------
        self.exporter = None  # the process-wide Exporter, created with the first tracer
        self.hook_tracer = None  # traces monitored modules while global tracing is off
        self._patches = None  # the PatchRegistry, made when the first patch is applied
        self.exit_flush_installed = False
        self.import_hooks: dict = {}  # module name -> importhook.PostImportFinder
        # -- in progress ---------------------------------------------------------------
        # Sampled traces whose root call is running: OpenTelemetry trace id ->
        # (TraceRecord, Tracer); MLflow's trace manager learns of them on demand.
        self.live_traces: dict = {}
        # Destinations Monitor hooks have sent traces to (their children follow them).
        self.monitored: set = set()
        # Destinations of the training runs in progress (most recent last).
        self.active_runs: list = []
        # MLflow's view of our traces (tracing.mlflow_view): the traces registered in its
        # trace manager, and the lock that makes registering and exposing calls atomic.
        self.registered_traces: set = set()
        self.view_lock = RLock()
        # MLflow trace ids of the last traces whose root returned (bounded, oldest first;
        # value True):
        # MLflow reading one of them from the store waits for its spans (mlflow_hooks).
        self.recent_roots: dict = {}
        # Idents of our threads that wait for a trace in the store themselves (the feedback
        # writer asks again until it is there): their MLflow reads do not force a flush.
        self.self_waiting_threads: set = set()
        # Streamed LM answers being read: iterator -> its open call record (tracing.streams).
        self.open_streams = None
        # Training runs whose end waits for their traces to be written:
        # (monitor, run, status), ended by training.run_end.
        self.runs_to_end: list = []
        # Called after a flush that wrote everything, and after the exit flush
        # (export.service): e.g. ending those runs.
        self.after_flush: list = []
        # Threads started by a run's own work -> that run's destination (tracing.threads).
        self.run_threads: WeakKeyDictionary = WeakKeyDictionary()
        # run id -> the observer of that run's traces (training.feedback): told when a
        # trace of the run starts and ends (its root call's inputs, outputs and cost).
        self.run_observers: dict = {}

    @property
    def patches(self):
        """The registry of every patch applied (``patching.registry``)."""
        if self._patches is None:
            from synalinks_obs.patching.registry import PatchRegistry

            self._patches = PatchRegistry()
        return self._patches


RUNTIME = Runtime()
