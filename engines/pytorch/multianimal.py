"""Bottom-up multi-animal models in the PyTorch engine, and the re-identification model.

Training follows the single-animal engine (:func:`posed.engines.pytorch.backend.run_training`:
same settings, augmentation, schedule, snapshots, resume and ``learning_stats.csv``); the
network is :class:`~posed.engines.pytorch.model.BottomUpNet` and the targets are
:func:`posed.engines.training.make_multianimal_targets`. Losses: weighted BCE on the
heatmaps, Huber on locref (as single-animal) and a weighted L2 on the part-affinity fields.
The bundle records the multi-animal layout in ``architecture``: ``individuals``,
``multianimalbodyparts``, ``uniquebodyparts``, ``paf_edges`` and ``paf_width``.

The re-identification (ReID) model is a small convolutional embedding of animal crops,
trained with a triplet loss on the tracklets of :func:`posed.engines.compat.create_tracking_dataset`
(two crops of one tracklet show the same animal; crops of two tracklets seen in the same
frame show different animals). :func:`posed.engines.tracking.stitch_tracklets` uses its
per-tracklet mean embeddings as ``features``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from posed.engines import compat
from posed.engines.base import AnimalPoses, MultiAnimalRunner
from posed.engines.bundle import ModelBundle
from posed.engines.io import atomic_path, atomic_write_text
from posed.engines.project import Project
from posed.engines.pytorch.backend import (ENGINE, pose_loss, prepare_training, run_training,
                                           select_device)
from posed.engines.pytorch.accel import OpenMPHandoff
from posed.engines.pytorch.model import TIMM_NAMES, BottomUpNet, load_state_dict
from posed.engines.training import (SampleMaker, TrainConfig, bundle_source,
                                    load_multianimal_training_data, make_multianimal_targets,
                                    random_animal_centre)
from posed.errors import ConfigError, DataError, InferenceError, ModelLoadError

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
    arch = {"net": cfg.net, "output_stride": cfg.output_stride, "head": "deconv3x3s2",
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
    data = load_multianimal_training_data(project, shuffle, cfg,
                                          compat.get_model_folder(project, shuffle, ENGINE))
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
                        step, test_error=test_error, extra_losses=("paf_loss",))


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

def build_model(bundle: ModelBundle) -> BottomUpNet:
    """Instantiate the bottom-up network a bundle describes (weights not loaded)."""
    arch = bundle.architecture
    try:
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
        model = build_model(bundle)
        try:
            model.load_state_dict(load_state_dict(bundle.weights_path))
        except RuntimeError as exc:
            raise ModelLoadError(f"{bundle.weights_path}: weights do not fit the architecture "
                                 f"({str(exc).splitlines()[0]})") from None
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
        from posed.engines.pytorch.backend import load_torchscript

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


# ----------------------------------------------------------------------------- re-identification

REID_FILE = "reid.safetensors"
REID_META = "reid.yaml"


class ReIDNet(nn.Module):
    """A small embedding network: uint8 N×S×S×3 crops → L2-normalised N×dim vectors.

    Three stride-2 convolutions and global average pooling: about 0.7 M multiply-adds per
    32×32 crop, so training on a video's tracklets takes seconds on a CPU.
    """

    def __init__(self, dim: int = 32, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(3, width), block(width, 2 * width),
                                      block(2 * width, 4 * width))
        self.head = nn.Linear(4 * width, dim)
        self.dim = dim
        self.width = width

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = crops.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        x = self.features(x).mean(dim=(2, 3))
        return F.normalize(self.head(x), dim=1)


class _Triplets:
    """Samples (anchor, positive, negative) indices: anchor and positive from one tracklet,
    the negative from another tracklet seen in the anchor's frame (surely another animal),
    else from any other tracklet of the same video."""

    def __init__(self, tracklet: np.ndarray, frame: np.ndarray, video: np.ndarray) -> None:
        self.tracklet, self.frame, self.video = tracklet, frame, video
        groups: dict[tuple[int, int], list[int]] = {}
        frames: dict[tuple[int, int], list[int]] = {}
        for i, (v, t, f) in enumerate(zip(video.tolist(), tracklet.tolist(), frame.tolist())):
            groups.setdefault((v, t), []).append(i)
            frames.setdefault((v, f), []).append(i)
        self.groups = {k: np.array(v) for k, v in groups.items()}
        self.frames = frames
        self.usable = np.array([i for i, (v, t) in enumerate(zip(video.tolist(), tracklet.tolist()))
                                if len(groups[(v, t)]) > 1], dtype=np.int64)

    def sample(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """A count×3 array of indices (fewer rows when no negative exists)."""
        out = []
        if not len(self.usable):
            return np.zeros((0, 3), dtype=np.int64)
        for a in rng.choice(self.usable, size=count):
            v, t = int(self.video[a]), int(self.tracklet[a])
            pos = rng.choice(self.groups[(v, t)])
            same = [i for i in self.frames[(v, int(self.frame[a]))] if self.tracklet[i] != t]
            if not same:
                same = np.flatnonzero((self.video == v) & (self.tracklet != t)).tolist()
                if not same:
                    continue
            out.append((a, pos, rng.choice(same)))
        return np.array(out, dtype=np.int64).reshape(-1, 3)


def train_reid(dataset: str | Path, out: str | Path, *, epochs: int = 10, steps: int = 20,
               batch_size: int = 32, dim: int = 32, margin: float = 0.3, lr: float = 3e-3,
               seed: int = 0) -> Path:
    """Train the ReID embedding on a tracking dataset (triplet loss, see the module notes).

    Args:
        dataset: The ``.npz`` written by :func:`posed.engines.compat.create_tracking_dataset`.
        out: Folder to write ``reid.safetensors`` and ``reid.yaml`` into.
        epochs, steps, batch_size: Training length: ``epochs`` × ``steps`` batches of triplets.
        dim: Embedding size.
        margin: Triplet margin (embeddings are unit vectors).
        lr: AdamW learning rate.
        seed: Seed of weights and triplet sampling.

    Returns:
        The folder.

    Raises:
        DataError: The dataset is unreadable or has no tracklet with two crops.
    """
    import yaml
    from safetensors.torch import save_file

    from posed.engines.tracking import read_tracking_dataset

    data = read_tracking_dataset(dataset)
    crops = torch.from_numpy(data["crops"])
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sampler = _Triplets(data["tracklet"], data["frame"], data["video"])
    model = ReIDNet(dim)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    model.train()
    for epoch in range(epochs):
        total = 0.0
        for _ in range(steps):
            idx = sampler.sample(rng, batch_size)
            if not len(idx):
                raise DataError(f"{dataset}: no tracklet with two crops and another tracklet "
                                "to contrast it with")
            batch = crops[torch.from_numpy(idx.reshape(-1))]
            if rng.random() < 0.5:  # mirror images show the same animal
                batch = batch.flip(2)
            emb = model(batch).view(-1, 3, dim)
            loss = F.triplet_margin_loss(emb[:, 0], emb[:, 1], emb[:, 2], margin=margin)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total / steps)
        log.info("reid epoch %d: triplet loss %.4f", epoch + 1, losses[-1])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / REID_FILE) as tmp:
        save_file(state, str(tmp))
    from posed.engines.bundle import sha256_file

    meta = {"format": "posed-reid-1", "dim": dim, "width": model.width,
            "crop_size": int(data["crops"].shape[1]), "window": int(data["window"]),
            "weights": REID_FILE,
            "sha256": sha256_file(out / REID_FILE), "dataset": str(dataset),
            "triplet_margin": margin, "epochs": epochs, "loss": [round(v, 5) for v in losses]}
    atomic_write_text(out / REID_META, yaml.safe_dump(meta, sort_keys=False))
    return out


class ReIDModel:
    """A trained ReID embedding (see :func:`train_reid`), on the CPU."""

    def __init__(self, folder: str | Path) -> None:
        import yaml

        from posed.engines.bundle import sha256_file

        folder = Path(folder)
        meta_file = folder / REID_META
        if not meta_file.is_file():
            raise ModelLoadError(f"{meta_file}: no ReID model (train one with "
                                 "posed create-tracking-dataset --train-reid)")
        try:
            meta = yaml.safe_load(meta_file.read_text())
            weights = folder / meta["weights"]
            self.crop_size = int(meta["crop_size"])
            self.window = int(meta["window"])
            dim, width = int(meta["dim"]), int(meta["width"])
        except (yaml.YAMLError, TypeError, KeyError, ValueError) as exc:
            raise ModelLoadError(f"{meta_file}: not a ReID description ({exc})") from None
        if sha256_file(weights) != meta.get("sha256"):
            raise ModelLoadError(f"{weights}: sha256 does not match {meta_file}")
        self.model = ReIDNet(dim, width)
        self.model.load_state_dict(load_state_dict(weights))
        self.model.eval()
        self.folder = folder

    @torch.inference_mode()
    def embed(self, crops: np.ndarray, batch: int = 256) -> np.ndarray:
        """uint8 M×S×S×3 crops → float32 M×dim unit vectors."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.crop_size, self.crop_size, 3):
            raise InferenceError(f"ReID crops must be M×{self.crop_size}×{self.crop_size}×3, "
                                 f"got {crops.shape}")
        out = [self.model(torch.from_numpy(np.ascontiguousarray(crops[i:i + batch]))).numpy()
               for i in range(0, len(crops), batch)]
        return np.concatenate(out) if out else np.zeros((0, self.model.dim), np.float32)


__all__ = ["AnimalPoses", "BottomUpNet", "ReIDModel", "ReIDNet", "TorchMultiAnimalRunner",
           "TorchScriptMultiAnimalRunner", "bottom_up_loss", "build_model", "is_multianimal", "load_runner", "matched_error",
           "train", "train_reid"]
