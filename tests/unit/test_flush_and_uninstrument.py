"""``flush()`` when MLflow's own span processors fail (defect 2), and ``uninstrument()``
leaving Synalinks and MLflow exactly as imported."""

import asyncio
import logging
import sys

import pytest


def test_flush_survives_mlflows_span_processors_failing(sqlite_uri, monkeypatch, caplog, lenient):
    import mlflow.tracing.processor.base_mlflow as base_mlflow
    import synalinks

    import synalinks_obs

    class Q(synalinks.DataModel):
        question: str

    class Echo(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="flush")
    try:
        asyncio.run(Echo(name="echo")(Q(question="q")))

        def broken(*args, **kwargs):
            raise RuntimeError("processors are broken")

        monkeypatch.setattr(base_mlflow, "flush_all_batch_processors", broken)
        with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
            assert synalinks_obs.flush(30) is True  # ours are written all the same
            assert synalinks_obs.flush(30) is True
        lines = [r.getMessage() for r in caplog.records if "processors are broken" in r.getMessage()]
        assert len(lines) == 1, lines
        monkeypatch.delattr(base_mlflow, "flush_all_batch_processors")  # gone in a new MLflow
        assert synalinks_obs.flush(30) is True
    finally:
        synalinks_obs.disable()


def _snapshot(prefixes=("synalinks", "mlflow")):
    """{(module or class, attribute): object} of every module and class of the prefixes."""
    seen = {}
    for name, module in list(sys.modules.items()):
        if module is None or not name.split(".")[0] in prefixes:
            continue
        for attr, value in list(vars(module).items()):
            seen[(id(module), attr)] = value
            if isinstance(value, type) and value.__module__ == name:
                for cls_attr, cls_value in list(vars(value).items()):
                    seen[(id(value), cls_attr)] = cls_value
    return seen


def test_uninstrument_puts_every_attribute_back(sqlite_uri, tmp_path):
    import mlflow  # noqa: F401
    import mlflow.store.db.utils  # noqa: F401  (the schema-lock patch target)
    import mlflow.tracing.processor.base_mlflow  # noqa: F401
    import synalinks

    import synalinks_obs
    from synalinks_obs.hooks import Monitor as HookMonitor
    from synalinks_obs.runtime import RUNTIME

    synalinks_obs.uninstrument()  # whatever earlier tests left
    before = _snapshot()
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="restore")
    HookMonitor(tracking_uri=sqlite_uri)
    from synalinks_obs.callbacks import Monitor  # noqa: F401  (the fit() wrapper)

    groups = {line.split(":")[0] for line in RUNTIME.patches.describe()}
    assert {"module calls", "synalinks API", "mlflow", "training"} <= groups, groups
    assert synalinks.Module.__call__ is not before[(id(synalinks.Module), "__call__")]
    synalinks_obs.uninstrument()
    after = _snapshot()
    changed = sorted(key for key, value in before.items() if after.get(key, before) is not value)
    added = sorted(key for key in after if key not in before and key[1] not in ("__annotations__",))
    assert changed == [] and len(RUNTIME.patches) == 0
    # Nothing of ours was left on an owner that existed before (modules imported since
    # are new owners and do not count).
    ours = [key for key in added if "synalinks_obs" in repr(after[key])]
    assert ours == [], ours


@pytest.mark.parametrize("twice", [False, True])
def test_enable_again_after_uninstrument_patches_again(sqlite_uri, twice):
    import synalinks

    import synalinks_obs
    from synalinks_obs.patching.module_call import MARK

    synalinks_obs.uninstrument()  # (an earlier test on this worker may have left the patches on)
    original = synalinks.Module.__dict__["__call__"]
    assert not getattr(original, MARK, False)
    for _ in range(2 if twice else 1):
        synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="again")
        assert getattr(synalinks.Module.__dict__["__call__"], MARK, False)
        synalinks_obs.uninstrument()
        assert synalinks.Module.__dict__["__call__"] is original
