"""Training runs in MLflow: the ``Monitor`` callback and the ``fit()`` autolog.

``monitor`` (the callback and its run), ``autolog`` (the ``fit``/``evaluate`` wrapper),
``program`` (introspection), ``plot`` (program plots) and ``state`` (the learned state,
saved and restored). The public import path is ``synalinks_obs.callbacks``.
"""
