"""The PyTorch engine: training and inference behind :mod:`posed.engines.api`.

Single-animal models are here; bottom-up multi-animal models are
:mod:`posed.engines.pytorch.multianimal` (:func:`load_runner` and :func:`train` hand them
over), the training loop both share is :mod:`posed.engines.pytorch.training`, devices are
:mod:`posed.engines.pytorch.accel`. Exporting is :mod:`posed.exporters.torch` (the registry's
``export`` capability of this engine).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posed.engines.backend_common import load_by_format
from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.decoding import decode
from posed.engines.io import atomic_path
from posed.engines.project import Project
from posed.engines.project.folders import get_model_folder
from posed.engines.pytorch import multianimal
from posed.engines.pytorch.accel import OpenMPHandoff, load_torchscript, select_device
from posed.engines.pytorch.dlc_families import (DLC_FAMILIES, TOP_DOWN_FAMILIES,
                                                random_dlc_export)
from posed.engines.pytorch.model import NET_HEADS, TIMM_NAMES, PoseNet, load_for_inference
from posed.engines.pytorch.training import ENGINE, pose_loss, prepare_training, run_training
from posed.engines.training import SampleMaker, TrainConfig, bundle_source, load_training_data
from posed.engines.training.pseudo import pseudo_labels_for
from posed.errors import ConfigError, InferenceError, ModelLoadError

__all__ = ["DLC_FAMILIES", "ENGINE", "TOP_DOWN_FAMILIES", "PoseNet", "TorchRunner",
           "TorchScriptRunner", "build_model", "load_runner", "load_torchscript", "pose_loss",
           "prepare_training", "random_bundle", "random_dlc_export", "run_training",
           "select_device", "train"]

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- inference

def build_model(bundle: ModelBundle) -> PoseNet:
    """Instantiate the network a bundle describes (weights not loaded)."""
    arch = bundle.architecture
    try:
        return PoseNet(arch["net"], len(bundle.bodyparts), int(arch.get("output_stride", 16)),
                       pretrained=False, mean=tuple(bundle.mean), std=tuple(bundle.std),
                       timm_model=arch.get("timm_model"), score=arch.get("score", "sigmoid"),
                       head=arch.get("head") or NET_HEADS.get(arch["net"], "deconv3x3s2"))
    except KeyError as exc:
        raise ModelLoadError(f"{bundle.path}: architecture lacks '{exc.args[0]}'") from None


def random_bundle(net: str, folder: Path, keypoints: int = 4, output_stride: int = 16,
                  timm_model: str | None = None) -> ModelBundle:
    """A randomly initialised bundle of ``net`` (for benchmarks and tests: no download needed);
    ``timm_model`` overrides the backbone (e.g. ``efficientnet_b0_gn``, a GroupNorm one)."""
    from safetensors.torch import save_file

    model = PoseNet(net, keypoints, output_stride, timm_model=timm_model)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "w.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    bundle = ModelBundle(engine=ENGINE, format="safetensors",
                         bodyparts=[f"part{i}" for i in range(keypoints)],
                         architecture={"net": net, "output_stride": output_stride,
                                       "timm_model": timm_model or TIMM_NAMES[net],
                                       "head": model.head},
                         stride=output_stride / 2, locref_stdev=7.2801,
                         source={"scorer": f"random_{net}"})
    bundle.save(folder, ["w.safetensors"])
    return bundle


class TorchRunner(OpenMPHandoff, PoseRunner):
    """Eager PyTorch inference of a ``safetensors`` bundle.

    Options (also settable in the daemon's ``model`` section):
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        threads: intra-op CPU threads.
        precision: ``auto`` (fp16 on CUDA, fp32 on CPU), ``fp32``, ``fp16`` (CUDA) or ``bf16``
            (CUDA, or CPUs with native bf16).
        channels_last: NHWC convolutions; default on for CUDA, off for the CPU.
        cuda_graphs: replay a captured CUDA graph per input shape (CUDA only; default on).
    """

    engine = ENGINE

    def __init__(self, bundle: ModelBundle, model: PoseNet, device: torch.device,
                 precision: str = "auto", channels_last: bool | None = None,
                 cuda_graphs: bool = True) -> None:
        from posed.engines.pytorch.accel import FastForward, describe, resolve_precision

        super().__init__(bundle)
        dtype, reason = resolve_precision(precision, device)
        cuda = device.type == "cuda"
        channels_last = cuda if channels_last is None else bool(channels_last)
        self.fast = FastForward(model, device, dtype, channels_last=channels_last,
                                cuda_graphs=cuda_graphs, stride=model.stride,
                                locref_stdev=bundle.locref_stdev, window=bundle.body_window)
        self.model = self.fast.model
        self.device = device
        self.precision = describe(dtype, channels_last, self.fast.pool is not None)
        log.info("pytorch engine: %s on %s (%s)", self.precision, device, reason)

    @classmethod
    def load(cls, bundle: ModelBundle, device: str = "auto", threads: int | None = None,
             precision: str = "auto", channels_last: bool | None = None,
             cuda_graphs: bool = True, **options: Any) -> "TorchRunner":
        from posed.engines.pytorch.accel import check_options

        if options:
            raise ConfigError(f"pytorch engine: unknown option '{next(iter(options))}'")
        check_options(precision, channels_last, cuda_graphs)
        if bundle.format != "safetensors":
            raise ModelLoadError(f"{bundle.path}: pytorch engine cannot run format '{bundle.format}'")
        if threads:
            torch.set_num_threads(int(threads))
        model = load_for_inference(build_model(bundle), bundle.weights_path)
        return cls(bundle, model, select_device(device), precision=precision,
                   channels_last=channels_last, cuda_graphs=cuda_graphs)

    def maps(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's maps for uint8 N×H×W×3 frames: scores N×K×h×w (as the model scores
        them: sigmoid or raw) and location refinement N×2K×h×w, float32."""
        frames = self._check_frames(frames)
        dtype = next(self.model.parameters()).dtype
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).to(dtype)
        with torch.inference_mode():
            heat, locref = self.model(x)
            scores = self.model.probabilities(heat)
        return scores.float().cpu().numpy(), locref.float().cpu().numpy()

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        try:
            return self.fast(frames)
        except RuntimeError as exc:
            raise InferenceError(f"pytorch forward failed: {str(exc).splitlines()[0]}") from exc


class TorchScriptRunner(OpenMPHandoff, PoseRunner):
    """Inference of a TorchScript bundle (uint8 NHWC frames in, score maps and locref out)."""

    engine = ENGINE

    def __init__(self, bundle: ModelBundle, module: torch.jit.ScriptModule, device: torch.device) -> None:
        super().__init__(bundle)
        self.module = module
        self.device = device

    @classmethod
    def load(cls, bundle: ModelBundle, device: str = "auto", threads: int | None = None,
             **options: Any) -> "TorchScriptRunner":
        if options:
            raise ConfigError(f"pytorch engine: unknown option '{next(iter(options))}'")
        return cls(bundle, *load_torchscript(bundle, device, threads))

    @torch.inference_mode()
    def _forward(self, frames: np.ndarray) -> np.ndarray:
        try:
            scores, locref = self.module(torch.from_numpy(frames).to(self.device))
        except RuntimeError as exc:
            raise InferenceError(f"torchscript forward failed: {str(exc).splitlines()[0]}") from exc
        return decode(scores.float().cpu().numpy(), locref.float().cpu().numpy(),
                      self.bundle.stride, self.bundle.locref_stdev, self.bundle.body_window)


def load_runner(bundle: ModelBundle, **options: Any) -> PoseRunner:
    """Engine entry point used by :func:`posed.engines.api.load_model`; bottom-up
    multi-animal bundles get a :class:`~posed.engines.base.MultiAnimalRunner`, top-down ones a
    :class:`~posed.engines.topdown.TopDownRunner`."""
    if "topdown" in bundle.architecture:
        from posed.engines.pytorch import topdown

        if bundle.architecture.get("head") == "rtmcc":
            from posed.engines.pytorch.rtmpose import SimCCRunner

            return topdown.load_runner(bundle, SimCCRunner.load, **options)
        pose = TorchScriptRunner.load if bundle.format == "torchscript" else TorchRunner.load
        return topdown.load_runner(bundle, pose, **options)
    if multianimal.is_multianimal(bundle):
        return multianimal.load_runner(bundle, **options)
    return load_by_format(bundle, options, {"torchscript": TorchScriptRunner.load},
                          TorchRunner.load)


# ----------------------------------------------------------------------------- training

def _bundle_for(project: Project, shuffle: int, cfg: TrainConfig, model: PoseNet, epoch: int,
                window: float | None) -> ModelBundle:
    return ModelBundle(
        engine=ENGINE, format="safetensors", bodyparts=list(project.bodyparts),
        architecture={"net": cfg.net, "output_stride": cfg.output_stride, "head": model.head,
                      "timm_model": TIMM_NAMES[cfg.net], "score": model.score},
        stride=float(model.stride), locref_stdev=cfg.target.locref_stdev,
        source=bundle_source(project, shuffle, cfg, epoch), body_window=window,
    )


def _predict(model: PoseNet, images: list[np.ndarray], locref_stdev: float,
             window: float | None = None) -> np.ndarray:
    """N×K×3 poses of ``model`` on full images (one at a time: sizes may differ); leaves the
    model in eval mode."""
    model.eval()
    out = []
    with torch.inference_mode():
        for img in images:
            heat, loc = model(torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
                              .float())
            out.append(decode(model.probabilities(heat).numpy(), loc.numpy(), model.stride,
                              locref_stdev, window)[0])
    return np.stack(out) if out else np.zeros((0, 0, 3))


def _mean_error(model: PoseNet, images: list[np.ndarray], keypoints: list[np.ndarray],
                locref_stdev: float, window: float | None = None) -> float:
    """Mean pixel error of ``model`` on full images (NaN when nothing is labelled)."""
    errs = []
    for pred, kp in zip(_predict(model, images, locref_stdev, window), keypoints):
        d = np.linalg.norm(pred[:, :2] - kp, axis=1)
        errs.extend(d[np.isfinite(d)].tolist())
    model.train()
    return float(np.mean(errs)) if errs else float("nan")


def train(project: Project, shuffle: int, overrides: dict[str, Any] | TrainConfig | None = None,
          *, progress: bool = True, resume: bool = False) -> Path:
    """Train a model for ``shuffle``; returns the training folder (a model bundle).

    With ``resume``, training continues from the newest snapshot and its optimiser state up to
    ``epochs``; otherwise an existing training folder with snapshots is an error. A
    multi-animal project trains the bottom-up model (:mod:`posed.engines.pytorch.multianimal`).
    """
    if getattr(project, "multianimal", False):
        return multianimal.train(project, shuffle, overrides, progress=progress, resume=resume)
    cfg, folder, existing = prepare_training(project, shuffle, overrides, resume)
    data = load_training_data(project, shuffle, cfg, get_model_folder(project, shuffle, ENGINE))
    cfg = data.cfg
    model = PoseNet(cfg.net, len(project.bodyparts), cfg.output_stride, pretrained=cfg.pretrained)
    model.train()
    maker = SampleMaker(data.images, data.keypoints, cfg, model.grid_size, model.stride)
    pseudo = pseudo_labels_for(project, cfg, folder, maker, data.labelled)

    def step(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        heat, locref = model(batch["image"])
        return pose_loss(heat, locref, batch, cfg.locref_loss_weight)

    def before_epoch(epoch: int) -> None:
        pseudo.before_epoch(epoch, lambda ims: _predict(model, ims, cfg.target.locref_stdev,
                                                        data.body_window))

    return run_training(
        project, shuffle, cfg, folder, existing, resume, progress, model,
        maker if pseudo is None else pseudo.samples, step,
        test_error=lambda: _mean_error(model, data.test_images, data.test_keypoints,
                                       cfg.target.locref_stdev, data.body_window),
        bundle_for=lambda epoch: _bundle_for(project, shuffle, cfg, model, epoch,
                                             data.body_window),
        before_epoch=None if pseudo is None else before_epoch)


from posed.engines.pytorch.profile import count_flops, cuda_device, matmul_call  # noqa: E402,F401 (posed bench's capabilities)


