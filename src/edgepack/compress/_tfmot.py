"""tfmot, imported only after edgepack.tf has set the Keras 2 switch (tfmot works only with tf_keras)."""

# isort: skip_file
from edgepack.tf import keras  # noqa: F401 - must run before tfmot is imported

import tensorflow_model_optimization as tfmot

__all__ = ["tfmot"]
