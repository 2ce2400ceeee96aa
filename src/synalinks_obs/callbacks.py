"""Synalinks callbacks of synalinks-obs: ``Monitor`` logs a ``fit()`` to an MLflow run.

    from synalinks_obs.callbacks import Monitor, restore_state

    monitor = Monitor(experiment_name="training_runs", run_name="experiment_v1")
    await program.fit(x=x, y=y, epochs=5, callbacks=[monitor])
    restore_state(fresh_program, monitor.run_id)   # the learned state, for inference

See ``synalinks_obs.training.monitor`` for what is logged. Importing this module imports
Synalinks.
"""

from synalinks_obs.training.monitor import Monitor
from synalinks_obs.training.state import restore_state

__all__ = ["Monitor", "restore_state"]
