"""The command-line tools: ``run`` (the launcher, ``python -m synalinks_obs.run``),
``doctor`` (with ``checks``, ``store_checks``, ``probe_call``) and ``traces``.
"""
