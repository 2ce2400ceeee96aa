"""The test suite's fake OpenAI-compatible LLM: the examples' offline server, under the name the tests use.

One implementation serves both, ``examples/_offline_lm.py`` (standard library only, so the
examples stay plain Synalinks programs); pytest finds it because pyproject's ``pythonpath``
lists ``examples``. `FakeLLM` is `OfflineServer` without the examples' fixed field values,
so every answer follows from the request alone (``"Example answer."`` for an ``answer``
field, ``"Done, after 1 tool result(s)."`` after a tool result), with its request log,
``reset()``, ``inject_latency()``, ``inject_errors()`` and ``GET /v1/models``.
"""

from _offline_lm import DEFAULT_MODEL, OFFLINE_MODEL, instance_from_schema
from _offline_lm import OfflineServer as FakeLLM

__all__ = ["DEFAULT_MODEL", "OFFLINE_MODEL", "FakeLLM", "instance_from_schema"]
