"""esc50tf: environmental-sound classification on ESC-50 with TensorFlow + Keras 3.

Importing the package is cheap: TensorFlow and Keras are imported only by the
modules that need them (``esc50tf.data.tfrecords``, ``esc50tf.data.pipeline``,
``esc50tf.frontend`` ...), never here.
"""

__version__ = "0.1.0"

from esc50tf.errors import Esc50Error  # noqa: E402  (light: no third-party imports)

__all__ = ["Esc50Error", "__version__"]
