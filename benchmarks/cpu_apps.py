"""The CPU-clock measurements of ``overhead.py``: small apps run as their own processes.

THREAD_APP: the calling thread's CPU per module call (``time.thread_time_ns``), with
untraced rounds interleaved in the same process, so that the load of this shared machine
hits every configuration alike. ``obs``: rounds of untraced (the original ``__call__``s),
*floor* (a bare wrapper on the same classes that only awaits the original) and traced
(synalinks-obs' wrapper, tracing on, its exporter running as in any app), swapped between
rounds. ``builtin``: rounds of an untraced program and of the same program built with
Synalinks' ``enable_observability()`` on (its Monitor hook writes on the calling thread).

PRODUCE_APP / WRITE_APP: export CPU per span, split by where it runs. PRODUCE_APP makes
the spans of workload (a) with synalinks-obs on (its exporter only collects the finished
records) and times, on one thread, what the app's exporter thread does with them: ``Wire``
tuples (payload JSON, redaction) and their pickle for the exporter process. WRITE_APP is
the exporter process's part, in a process like it (MLflow imported, no Synalinks, the
collector frozen): unpickle, MLflow spans (``wire_to_span``) and MLflow's ``log_spans``
in batches, into a SQLite store or a server (the client side).
"""

import textwrap

# Workload (a) in the apps below: a program of 10 trivial custom modules (11 spans a call).
WORKLOAD_A = r'''
class Question(synalinks.DataModel):
    question: str

class Step(synalinks.Module):
    async def call(self, inputs, training=False):
        return inputs.clone()

    async def compute_output_spec(self, inputs, training=False):
        return inputs.clone()

async def build(name):
    x = synalinks.Input(data_model=Question)
    y = x
    for i in range(10):
        y = await Step(name=f"step_{i}")(y)
    return synalinks.Program(inputs=x, outputs=y, name=name)
'''

# The three phases of an app that has enabled synalinks-obs (``RUNTIME`` imported):
# ``use_phase("untraced" | "floor" | "traced")`` gives the patched classes their original
# ``__call__``, a bare wrapper that only awaits it (the floor), or synalinks-obs' wrapper
# with tracing on. Used by THREAD_APP and by ``callgrind_spans.py``.
PHASES = r'''
patched = [(p.owner, p.original, p.replacement) for p in RUNTIME.patches if p.name == "__call__"]
tracer, route = RUNTIME.tracer, RUNTIME.route

def bare(original):
    @functools.wraps(original)
    async def __call__(self, *args, **kwargs):
        return await original(self, *args, **kwargs)
    return __call__

floors = [bare(original) for _, original, _ in patched]

def use_phase(phase):
    for (owner, original, traced), floor in zip(patched, floors):
        setattr(owner, "__call__", {"untraced": original, "floor": floor, "traced": traced}[phase])
    RUNTIME.tracer, RUNTIME.route = (tracer, route) if phase == "traced" else (None, None)
'''

THREAD_APP = r'''
import asyncio, functools, gc, json, os, statistics, sys, time

mode, uri, rounds, per_round = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
import synalinks
from synalinks.src.backend import config as synalinks_config
''' + WORKLOAD_A + r'''
plain = asyncio.run(build("bench_a"))
programs = {}
if mode == "obs":
    import synalinks_obs
    from synalinks_obs.runtime import RUNTIME

    synalinks_obs.enable(tracking_uri=uri, experiment_name="bench-thread")
''' + textwrap.indent(PHASES, "    ") + r'''
    def use(config):
        use_phase(config)
        return plain

    configs = ["untraced", "floor", "traced"]
else:
    synalinks.enable_observability(tracking_uri=uri, experiment_name="bench-thread")
    monitored = asyncio.run(build("bench_a"))

    def use(config):
        synalinks_config._ENABLE_OBSERVABILITY = config == "builtin"
        return monitored if config == "builtin" else plain

    configs = ["untraced", "builtin"]

async def loop(program, n):
    for i in range(n):
        await program(Question(question=f"question {i}?"))

for config in configs:  # warm-up
    program = use(config)
    asyncio.run(loop(program, 20))
started = time.monotonic()
while time.monotonic() - started < float(os.environ.get("WARMUP", "5")):
    asyncio.run(loop(use(configs[-1]), 5))
gc.collect()
per_span = {config: [] for config in configs}
loads = [os.getloadavg()[0]]
for r in range(rounds):
    order = configs if r % 2 == 0 else configs[::-1]
    for config in order:
        program = use(config)
        t0 = time.thread_time_ns()
        asyncio.run(loop(program, per_round))
        per_span[config].append((time.thread_time_ns() - t0) / (per_round * 11))
loads.append(os.getloadavg()[0])
use(configs[-1])
print(json.dumps({"per_span_ns": per_span, "rounds": rounds, "calls_per_round": per_round,
                  "load": loads}), flush=True)
'''

PRODUCE_APP = r'''
import asyncio, gc, json, os, pickle, sys, time

calls, out = int(sys.argv[1]), sys.argv[2]
import synalinks
import synalinks_obs
from synalinks_obs.export.wire import record_to_wire
from synalinks_obs.masking import policy_for
from synalinks_obs.runtime import RUNTIME

synalinks_obs.enable(tracking_uri="sqlite:///" + out + ".unused.db", experiment_name="bench-export")
records = []
RUNTIME.tracer.exporter.submit = records.append  # the records, as the exporter thread gets them

''' + WORKLOAD_A + r'''
program = asyncio.run(build("bench_a"))

async def loop(n):
    for i in range(n):
        await program(Question(question=f"question {i}?"))

asyncio.run(loop(calls))
records = [r for r in records if not r.symbolic]
settings = RUNTIME.settings
policy = policy_for(settings)
gc.collect()
t0 = time.thread_time_ns()
wires = [record_to_wire(r, settings, policy) for r in records]
t1 = time.thread_time_ns()
payload = pickle.dumps(wires, protocol=pickle.HIGHEST_PROTOCOL)
t2 = time.thread_time_ns()
with open(out, "wb") as f:
    f.write(payload)
print(json.dumps({"spans": len(wires), "record_to_wire_ns": (t1 - t0) / len(wires),
                  "pickle_ns": (t2 - t1) / len(wires), "bytes_per_span": len(payload) / len(wires)}),
      flush=True)
'''

WRITE_APP = r'''
import gc, json, os, pickle, sys, time

uri, path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
from mlflow.entities import Span  # noqa: F401  (imported as the exporter process does)
from synalinks_obs.store.mlflow_spans import wire_to_span
from synalinks_obs.store.writer import Writer
from synalinks_obs.tracing.records import Destination

data = open(path, "rb").read()
writer = Writer(10**7)
destination = Destination(uri, "bench-export")
experiment_id = writer.experiment_id(destination)
client = writer._client(uri)
warm = pickle.loads(data)[:22]
client.log_spans(experiment_id, [wire_to_span(w) for w in warm])  # a first write: caches warm
gc.collect()
gc.freeze()
t0 = time.thread_time_ns()
wires = pickle.loads(data)[22:]
t1 = time.thread_time_ns()
spans = [wire_to_span(w) for w in wires]
t2 = time.thread_time_ns()
for i in range(0, len(spans), batch):
    client.log_spans(experiment_id, spans[i:i + batch])
t3 = time.thread_time_ns()
n = len(wires)
print(json.dumps({"spans": n, "unpickle_ns": (t1 - t0) / n, "wire_to_span_ns": (t2 - t1) / n,
                  "log_spans_ns": (t3 - t2) / n, "batch": batch, "load": os.getloadavg()[0]}),
      flush=True)
'''
