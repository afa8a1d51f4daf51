"""The one door to TensorFlow. tfmot needs Keras 2, so the legacy switch is set before TF loads.

Every module that needs TensorFlow does ``from edgepack.tf import tf, keras`` and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # CPU-only here: no cuInit errors in the user's terminal


@contextlib.contextmanager
def quiet_native_stderr():
    """TF's C++ libraries print oneDNN/CUDA banners (and the converter its quantizer settings) to fd 2, past
    logging; hold them back and show them only if the block fails (so a real error is never hidden)."""
    if os.environ.get("EDGEPACK_TF_VERBOSE"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            buf.seek(0)
            sys.stderr.write(buf.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


with quiet_native_stderr():
    import tensorflow as tf
    import tf_keras as keras

    multi_worker = None  # the MultiWorkerMirroredStrategy of edgepack.distributed, when it asked for one
    if os.environ.get("EDGEPACK_MULTI_WORKER") == "1":  # collectives can be set up only before TF's first op
        multi_worker = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING  # the CPU all-reduce
            )
        )
    tf.constant(0)  # initialise the CPU device now, while its banner is still held back

tf.get_logger().setLevel("ERROR")

__all__ = ["tf", "keras", "quiet_native_stderr"]
