"""What MLflow runs to load a logged program model ("models from code", see ``training.model``).

``mlflow.pyfunc.save_model(python_model=<this file>)`` copies this file into the model;
loading the model runs it, and ``set_model`` hands MLflow a ``ProgramModel``, whose
``load_context`` then rebuilds the program from the model's ``program`` artifact. Nothing
is pickled.
"""

import mlflow.models

from synalinks_obs.training.model import ProgramModel

mlflow.models.set_model(ProgramModel())
