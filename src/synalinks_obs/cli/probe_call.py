"""The doctor's proof that modules built before activation are traced: real calls.

A module is built, *then* ``Module.__call__`` is patched (unless it already is), then a
subclass that overrides ``__call__`` is defined; both are called, in a thread of their
own, with a tracer whose exporter only keeps the records in memory, so nothing reaches
a store. Every patch made here is reverted.
"""

from __future__ import annotations

import asyncio
import threading

from synalinks_obs.runtime import RUNTIME


class _Recorder:
    """An exporter stand-in: keeps finished records, writes nothing."""

    def __init__(self):
        self.records = []

    def submit(self, record) -> None:
        self.records.append(record)

    def call_soon(self, fn) -> None:
        pass

    def experiment_id_now(self, destination):
        raise RuntimeError("the doctor's probe has no store")


def traced_probe_call(synalinks) -> list[str]:
    """Span names recorded for a module built before patching and a later subclass."""
    from synalinks_obs.patching import module_call
    from synalinks_obs.patching.registry import PatchRegistry
    from synalinks_obs.settings import load_settings
    from synalinks_obs.tracing.tracer import Tracer

    class Ping(synalinks.DataModel):
        text: str

    class BuiltBefore(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs

    early = BuiltBefore(name="doctor_built_before")
    registry = None
    if not module_call.is_installed():
        registry = PatchRegistry()
        module_call.install(registry)
    try:
        class DefinedAfter(synalinks.Module):
            async def __call__(self, *args, **kwargs):
                return await super().__call__(*args, **kwargs)

            async def call(self, inputs, training=False):
                return inputs

        late = DefinedAfter(name="doctor_defined_after")
        recorder = _Recorder()
        tracer = Tracer(load_settings(report=lambda line: None), "doctor-probe:", recorder)
        errors = []

        async def calls():
            await early(Ping(text="ping"))
            await late(Ping(text="ping"))

        def run():
            try:
                asyncio.run(calls())
            except BaseException as exc:  # reported by the caller
                errors.append(exc)

        saved = RUNTIME.tracer, RUNTIME.route
        RUNTIME.tracer, RUNTIME.route = tracer, None
        try:
            thread = threading.Thread(target=run, name="synalinks-obs-doctor-probe")
            thread.start()
            thread.join(30)
        finally:
            RUNTIME.tracer, RUNTIME.route = saved
        if errors:
            raise errors[0]
        return [record.name for record in recorder.records]
    finally:
        if registry is not None:
            registry.revert()
