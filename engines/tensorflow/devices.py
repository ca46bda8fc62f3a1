"""TensorFlow devices and CPU threads, shared by every TensorFlow runner and by training."""

from __future__ import annotations

import logging

from posed.engines.tensorflow import import_tensorflow
from posed.errors import ConfigError

tf = import_tensorflow()

log = logging.getLogger(__name__)


def select_device(device: str = "auto") -> str:
    """Resolve ``auto``/``cpu``/``gpu``/``gpu:N`` to a TensorFlow device string.

    A GPU request without a visible GPU falls back to the CPU with a warning.
    """
    want = (device or "auto").lower()
    if want == "cpu":
        return "/CPU:0"
    if want == "auto" or want.startswith(("gpu", "cuda")):
        gpus = tf.config.list_physical_devices("GPU")
        index = int(want.split(":", 1)[1]) if ":" in want else 0
        if gpus:
            if index >= len(gpus):
                raise ConfigError(f"device '{device}': only {len(gpus)} GPU(s)")
            return f"/GPU:{index}"
        if want != "auto":
            log.warning("tensorflow engine: device '%s' requested but no GPU is visible; using CPU", device)
        return "/CPU:0"
    raise ConfigError(f"device '{device}' is not one of auto, cpu, gpu, gpu:N")


def set_threads(threads: int | None) -> None:
    """Limit TensorFlow's CPU threads; only possible before TensorFlow runs its first op."""
    if not threads:
        return
    threads = int(threads)
    if tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(threads, 2)))
    except RuntimeError:
        # TensorFlow fixes its thread pools when the runtime starts, for the whole process.
        log.warning("tensorflow engine: threads=%d ignored (TensorFlow already started in "
                    "this process)", threads)
