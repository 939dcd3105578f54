"""The pyfunc model MLflow logs from code (models-from-code): the artifacts hold this file and the Helios
model directory, no pickled Python object. ``Tracker.log_model`` passes this file's path."""

import mlflow

from helios_pipelines.core.ml.tracking import HeliosPythonModel

mlflow.models.set_model(HeliosPythonModel())
