"""Bottom-up multi-animal models in the PyTorch engine.

Training follows the single-animal engine (:func:`posed.engines.pytorch.training.run_training`:
same settings, augmentation, schedule, snapshots, resume and ``learning_stats.csv``); the
network is :class:`~posed.engines.pytorch.model.BottomUpNet` and the targets are
:func:`posed.engines.training.make_multianimal_targets`. Losses: weighted BCE on the
heatmaps, Huber on locref (as single-animal) and a weighted L2 on the part-affinity fields.
The bundle records the multi-animal layout in ``architecture``: ``individuals``,
``multianimalbodyparts``, ``uniquebodyparts``, ``paf_edges`` and ``paf_width``. The
re-identification model that helps tracking is :mod:`posed.engines.pytorch.reid`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posed.engines.base import AnimalPoses, MultiAnimalRunner
from posed.engines.bundle import ModelBundle
from posed.engines.project import Project
from posed.engines.project.folders import get_model_folder
from posed.engines.pytorch.accel import OpenMPHandoff, load_torchscript, select_device
from posed.engines.pytorch.training import ENGINE, pose_loss, prepare_training, run_training
from posed.engines.pytorch.dlcrnet import DLCRNet
from posed.engines.pytorch.model import TIMM_NAMES, BottomUpNet, load_for_inference
from posed.engines.training.pseudo import refuse as refuse_pseudo_labels
from posed.engines.training import (SampleMaker, TrainConfig, bundle_source,
                                    load_multianimal_training_data, make_multianimal_targets,
                                    random_animal_centre)
from posed.errors import ConfigError, InferenceError, ModelLoadError

log = logging.getLogger(__name__)

PAF_LOSS_WEIGHT = 20.0
"""Weight of the PAF loss (a per-cell mean, as the heatmap loss) against the heatmap loss.
The fields are zero almost everywhere (a few % of the cells lie on a limb), and with weight
1 the head learned nothing but zeros in the measured runs; dividing by the number of limb
cells instead made the loss jump with the limbs a crop happens to hold."""


def is_multianimal(bundle: ModelBundle) -> bool:
    """True for bundles of bottom-up multi-animal models."""
    return "individuals" in bundle.architecture


def paf_width(cfg: TrainConfig, stride: float) -> float:
    """Half-width (pixels) of the limb bands drawn as PAF targets: the heatmap sigma, and
    at least one grid cell so every limb covers cells."""
    return float(max(cfg.target.sigma, stride))


# ----------------------------------------------------------------------------- training

def bottom_up_loss(heat: torch.Tensor, locref: torch.Tensor, paf: torch.Tensor,
                   batch: dict[str, torch.Tensor], locref_weight: float,
                   paf_weight: float = PAF_LOSS_WEIGHT) -> tuple[torch.Tensor, ...]:
    """The single-animal losses (:func:`pose_loss`) plus weighted L2 on the fields.

    Returns:
        (total, heatmap, locref, paf) losses.
    """
    total, hm, lo = pose_loss(heat, locref, batch, locref_weight)
    pw = batch["paf_weight"]
    pf = (((paf - batch["paf"]) ** 2) * pw).sum() / pw.sum().clamp(min=1.0)
    return total + paf_weight * pf, hm, lo, pf


def bundle_for(project: Project, shuffle: int, cfg: TrainConfig, model: BottomUpNet,
               epoch: int) -> ModelBundle:
    """The bundle describing a bottom-up snapshot; ``architecture`` records the
    multi-animal layout (see the module notes)."""
    arch = {"net": cfg.net, "output_stride": cfg.output_stride, "head": model.head,
            "timm_model": TIMM_NAMES[cfg.net], "score": model.score,
            "individuals": list(project.individuals),
            "multianimalbodyparts": list(project.multianimalbodyparts),
            "uniquebodyparts": list(project.uniquebodyparts),
            "paf_edges": [[a, b] for a, b in model.paf_edges],
            "paf_width": paf_width(cfg, model.stride)}
    return ModelBundle(engine=ENGINE, format="safetensors", bodyparts=list(project.bodyparts),
                       architecture=arch, stride=float(model.stride),
                       locref_stdev=cfg.target.locref_stdev,
                       source=bundle_source(project, shuffle, cfg, epoch))


def train(project: Project, shuffle: int, overrides: dict[str, Any] | TrainConfig | None = None,
          *, progress: bool = True, resume: bool = False) -> Path:
    """Train the bottom-up model of a multi-animal project (see the module notes)."""
    cfg, folder, existing = prepare_training(project, shuffle, overrides, resume)
    refuse_pseudo_labels(cfg, "multi-animal projects")
    data = load_multianimal_training_data(project, shuffle, cfg,
                                          get_model_folder(project, shuffle, ENGINE))
    cfg = data.cfg
    skeleton = data.skeleton
    model = BottomUpNet(cfg.net, len(project.bodyparts), skeleton, cfg.output_stride,
                        pretrained=cfg.pretrained)
    model.train()
    width = paf_width(cfg, model.stride)

    def targets(kpts: np.ndarray, grid: tuple[int, int], stride: float, spec: Any) -> dict:
        return make_multianimal_targets(kpts, grid, stride, spec, skeleton, width)

    maker = SampleMaker(data.images, data.keypoints, cfg, model.grid_size, model.stride,
                        target_fn=targets, crop_centre=random_animal_centre)

    def step(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        heat, locref, paf = model(batch["image"])
        return bottom_up_loss(heat, locref, paf, batch, cfg.locref_loss_weight)

    def test_error() -> float:
        if not data.test_images:
            return float("nan")
        runner = TorchMultiAnimalRunner(bundle_for(project, shuffle, cfg, model, 0), model,
                                        torch.device("cpu"))
        return matched_error(runner, data.test_images, data.test_truth)

    return run_training(project, shuffle, cfg, folder, existing, resume, progress, model, maker,
                        step, test_error=test_error, extra_losses=("paf_loss",),
                        bundle_for=lambda epoch: bundle_for(project, shuffle, cfg, model, epoch))


def matched_error(runner: MultiAnimalRunner, images: list[np.ndarray],
                  truth: list[np.ndarray]) -> float:
    """Mean keypoint error (pixels) after matching found animals to labelled ones
    (:func:`posed.engines.offline.evaluate.match_animals`); NaN when nothing matched."""
    from posed.engines.offline.evaluate import match_animals

    errs: list[float] = []
    for img, gt in zip(images, truth):
        found = runner.predict_animals(img).found(0)
        for g, a in match_animals(found, gt):
            d = np.linalg.norm(found[a, :, :2] - gt[g], axis=-1)
            errs.extend(d[np.isfinite(d)].tolist())
    return float(np.mean(errs)) if errs else float("nan")


# ----------------------------------------------------------------------------- inference

def build_model(bundle: ModelBundle) -> BottomUpNet | DLCRNet:
    """Instantiate the bottom-up network a bundle describes (weights not loaded):
    DeepLabCut 3's multi-stage head for ``head: dlcrnet``, posed's own otherwise."""
    arch = bundle.architecture
    try:
        if arch.get("head") == DLCRNet.head:
            return DLCRNet(arch["net"], len(bundle.bodyparts), arch["paf_edges"],
                           int(arch.get("output_stride", 16)),
                           num_stages=int(arch.get("num_stages", 5)),
                           features_dim=int(arch.get("features_dim", 128)),
                           mean=tuple(bundle.mean), std=tuple(bundle.std),
                           timm_model=arch.get("timm_model"), score=arch.get("score", "sigmoid"))
        return BottomUpNet(arch["net"], len(bundle.bodyparts), arch["paf_edges"],
                           int(arch.get("output_stride", 16)), pretrained=False,
                           mean=tuple(bundle.mean), std=tuple(bundle.std),
                           timm_model=arch.get("timm_model"), score=arch.get("score", "sigmoid"),
                           head=arch.get("head", "deconv3x3s2"))
    except KeyError as exc:
        raise ModelLoadError(f"{bundle.path}: architecture lacks '{exc.args[0]}'") from None


class TorchMultiAnimalRunner(OpenMPHandoff, MultiAnimalRunner):
    """Eager PyTorch inference of a bottom-up ``safetensors`` bundle.

    Options: ``device``, ``threads`` and ``precision`` as for the single-animal runner
    (``channels_last`` too); ``assembly`` overrides assembly settings
    (:data:`posed.engines.base.ASSEMBLY_DEFAULTS`). ``cuda_graphs`` is accepted and not used:
    the maps go back to the host for assembly anyway.
    """

    engine = ENGINE

    def __init__(self, bundle: ModelBundle, model: BottomUpNet, device: torch.device,
                 precision: str = "auto", channels_last: bool | None = None,
                 assembly: dict[str, Any] | None = None) -> None:
        from posed.engines.pytorch.accel import describe, resolve_precision

        super().__init__(bundle, assembly)
        self.dtype, reason = resolve_precision(precision, device)
        self.channels_last = device.type == "cuda" if channels_last is None else bool(channels_last)
        model = model.to(device).eval()
        if self.dtype == torch.float16:
            model = model.half()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.device = device
        self.precision = describe(self.dtype, self.channels_last, False)
        log.debug("pytorch engine (multi-animal): %s on %s (%s)", self.precision, device, reason)

    @classmethod
    def load(cls, bundle: ModelBundle, device: str = "auto", threads: int | None = None,
             precision: str = "auto", channels_last: bool | None = None,
             cuda_graphs: bool = True, assembly: dict[str, Any] | None = None,
             **options: Any) -> "TorchMultiAnimalRunner":
        from posed.engines.pytorch.accel import check_options

        if options:
            raise ConfigError(f"pytorch engine: unknown option '{next(iter(options))}'")
        check_options(precision, channels_last, cuda_graphs)
        if bundle.format != "safetensors":
            raise ModelLoadError(f"{bundle.path}: multi-animal models run from safetensors "
                                 f"bundles (this one is {bundle.format})")
        if threads:
            torch.set_num_threads(int(threads))
        model = load_for_inference(build_model(bundle), bundle.weights_path)
        return cls(bundle, model, select_device(device), precision=precision,
                   channels_last=channels_last, assembly=assembly)

    @torch.inference_mode()
    def _maps(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2)
        x = x.to(torch.float16 if self.dtype == torch.float16 else torch.float32)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            if self.dtype == torch.bfloat16:
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    heat, locref, paf = self.model(x)
            else:
                heat, locref, paf = self.model(x)
        except RuntimeError as exc:
            raise InferenceError(f"pytorch forward failed: {str(exc).splitlines()[0]}") from exc
        scores = self.model.probabilities(heat.float())
        return (scores.cpu().numpy(), locref.float().cpu().numpy(), paf.float().cpu().numpy())


class TorchScriptMultiAnimalRunner(OpenMPHandoff, MultiAnimalRunner):
    """Inference of a bottom-up TorchScript bundle (uint8 NHWC frames in; score maps, locref
    and part-affinity fields out, as :func:`posed.exporters.torch.export_torchscript` writes)."""

    engine = ENGINE

    def __init__(self, bundle: ModelBundle, module: torch.jit.ScriptModule, device: torch.device,
                 assembly: dict[str, Any] | None = None) -> None:
        super().__init__(bundle, assembly)
        self.module = module
        self.device = device

    @classmethod
    def load(cls, bundle: ModelBundle, device: str = "auto", threads: int | None = None,
             assembly: dict[str, Any] | None = None,
             **options: Any) -> "TorchScriptMultiAnimalRunner":
        if options:
            raise ConfigError(f"pytorch engine: unknown option '{next(iter(options))}'")
        module, dev = load_torchscript(bundle, device, threads)
        return cls(bundle, module, dev, assembly)

    @torch.inference_mode()
    def _maps(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        try:
            outputs = self.module(torch.from_numpy(frames).to(self.device))
        except RuntimeError as exc:
            raise InferenceError(f"torchscript forward failed: {str(exc).splitlines()[0]}") from exc
        if len(outputs) != 3:
            raise InferenceError(f"{self.bundle.weights_path}: the module returns {len(outputs)} "
                                 "outputs; a multi-animal model returns scores, locref and PAFs")
        scores, locref, paf = (o.float().cpu().numpy() for o in outputs)
        return scores, locref, paf


def load_runner(bundle: ModelBundle, **options: Any) -> MultiAnimalRunner:
    """Entry point for multi-animal bundles (called by the engine's ``load_runner``)."""
    if bundle.format == "torchscript":
        return TorchScriptMultiAnimalRunner.load(bundle, **options)
    return TorchMultiAnimalRunner.load(bundle, **options)


__all__ = ["AnimalPoses", "BottomUpNet", "TorchMultiAnimalRunner", "TorchScriptMultiAnimalRunner",
           "bottom_up_loss", "build_model", "is_multianimal", "load_runner", "matched_error",
           "train"]
