"""The TensorFlow / Keras 3 engine (imported only when the engine is used).

Importing this package does not import TensorFlow; :func:`import_tensorflow` does, after
quietening TensorFlow's start-up messages.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from types import ModuleType

log = logging.getLogger(__name__)

# Lines TensorFlow's C++ runtime writes straight to file descriptor 2 while it loads, whatever
# TF_CPP_MIN_LOG_LEVEL says (absl logs them before its log level is initialised).
_NOISE = ("absl::InitializeLog", "oneDNN custom operations", "Unable to register cu",
          "Could not find cuda drivers", "TF-TRT Warning", "computation placer already registered",
          "This TensorFlow binary is optimized", "rebuild TensorFlow with the appropriate")


def import_tensorflow() -> ModuleType:
    """Import TensorFlow with its start-up noise (oneDNN notice, CUDA probing) silenced.

    ``TF_CPP_MIN_LOG_LEVEL`` is only set when the user has not set it, so
    ``TF_CPP_MIN_LOG_LEVEL=0`` still shows everything. Messages printed by the C++ runtime
    during the import are captured; the known notices are dropped and anything else is
    passed on as a log warning. This runs when the TensorFlow engine is used, never when
    posed itself is imported.
    """
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    _load_triton_first()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    verbose = os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    captured = b""
    if verbose:
        import tensorflow as tf
    else:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                import tensorflow as tf
                # The oneDNN notice is printed again when the CPU device is first created.
                tf.config.list_logical_devices("CPU")
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                captured = sink.read()
    for line in captured.decode("utf-8", "replace").splitlines():
        if line.strip() and not any(n in line for n in _NOISE):
            log.warning("tensorflow: %s", line.strip())
    tf.get_logger().setLevel("ERROR")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl ships with TensorFlow; tolerate odd installs
        pass
    return tf


def _load_triton_first() -> None:
    """Import Triton (installed with torch's Linux wheels) before TensorFlow, if present.

    Triton loaded after TensorFlow crashes the process with a segmentation fault (torch
    imports it lazily, e.g. through ``torchvision.ops`` or ``torch._dynamo``), so a process
    that used the TensorFlow engine could not use the PyTorch engine afterwards. Loaded
    first, both work; it costs about 0.2 s and only where Triton is installed.
    """
    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        import triton  # noqa: F401
    except Exception as exc:  # a broken Triton must not stop the TensorFlow engine
        log.debug("triton not preloaded: %s", exc)
