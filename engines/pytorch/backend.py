"""The PyTorch engine: training and inference behind :mod:`posed.engines.compat`.

Snapshots are written as ``snapshot-NNN.safetensors`` (weights only) beside ``posed.yaml``,
so the training folder is a model bundle with no pickle in it. The optimiser state needed
to resume lives in ``resume-state.safetensors`` (tensors) with its settings as JSON metadata.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from posed.engines import compat
from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.decoding import decode
from posed.engines.io import atomic_path
from posed.engines.project import Project
from posed.engines.pytorch.accel import OpenMPHandoff
from posed.engines.pytorch.model import TIMM_NAMES, PoseNet, load_state_dict
from posed.engines.training import (RESUME_FILE, LearningStats, SampleMaker, TrainConfig,
                                    bundle_source, load_training_data, lr_at, resolve_train_config,
                                    resume_epoch, snapshot_name)
from posed.errors import ConfigError, InferenceError, ModelLoadError, reason

log = logging.getLogger(__name__)

ENGINE = "pytorch"


# ----------------------------------------------------------------------------- devices

def select_device(device: str = "auto") -> torch.device:
    """Resolve ``auto``/``cpu``/``cuda``/``cuda:N``; a CUDA request without CUDA falls back to CPU."""
    want = (device or "auto").lower()
    if want == "cpu":
        return torch.device("cpu")
    if want == "auto" or want.startswith("cuda"):
        if torch.cuda.is_available():
            dev = torch.device("cuda" if want == "auto" else want)
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise ConfigError(f"device '{device}': only {torch.cuda.device_count()} CUDA device(s)")
            log.info("pytorch engine: using %s (%s)", dev, torch.cuda.get_device_name(dev))
            return dev
        if want != "auto":
            log.warning("pytorch engine: device '%s' requested but CUDA is not available; using CPU", device)
        else:
            log.info("pytorch engine: no CUDA device; using CPU")
        return torch.device("cpu")
    raise ConfigError(f"device '{device}' is not one of auto, cpu, cuda, cuda:N")


# ----------------------------------------------------------------------------- inference

def build_model(bundle: ModelBundle) -> PoseNet:
    """Instantiate the network a bundle describes (weights not loaded)."""
    arch = bundle.architecture
    try:
        return PoseNet(arch["net"], len(bundle.bodyparts), int(arch.get("output_stride", 16)),
                       pretrained=False, mean=tuple(bundle.mean), std=tuple(bundle.std),
                       timm_model=arch.get("timm_model"), score=arch.get("score", "sigmoid"),
                       head=arch.get("head", "deconv3x3s2"))
    except KeyError as exc:
        raise ModelLoadError(f"{bundle.path}: architecture lacks '{exc.args[0]}'") from None


def random_bundle(net: str, folder: Path, keypoints: int = 4, output_stride: int = 16) -> ModelBundle:
    """A randomly initialised bundle of ``net`` (for benchmarks and tests: no download needed)."""
    from safetensors.torch import save_file

    model = PoseNet(net, keypoints, output_stride)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "w.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    bundle = ModelBundle(engine=ENGINE, format="safetensors",
                         bodyparts=[f"part{i}" for i in range(keypoints)],
                         architecture={"net": net, "output_stride": output_stride,
                                       "timm_model": TIMM_NAMES[net]},
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
                                locref_stdev=bundle.locref_stdev)
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
        model = build_model(bundle)
        state = load_state_dict(bundle.weights_path)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelLoadError(f"{bundle.weights_path}: weights do not fit the architecture "
                                 f"({str(exc).splitlines()[0]})") from None
        return cls(bundle, model.eval(), select_device(device), precision=precision,
                   channels_last=channels_last, cuda_graphs=cuda_graphs)

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        try:
            return self.fast(frames)
        except RuntimeError as exc:
            raise InferenceError(f"pytorch forward failed: {str(exc).splitlines()[0]}") from exc


def load_torchscript(bundle: ModelBundle, device: str = "auto",
                     threads: int | None = None) -> tuple[torch.jit.ScriptModule, torch.device]:
    """The TorchScript module of a ``torchscript`` bundle, on the selected device, in eval mode."""
    if threads:
        torch.set_num_threads(int(threads))
    dev = select_device(device)
    try:
        with warnings.catch_warnings():
            # torch 2.14 marks TorchScript as deprecated; it still runs, and the bundle
            # format is what users chose to export.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(bundle.weights_path), map_location=dev)
    except Exception as exc:  # TorchScript raises RuntimeError and internal types alike
        raise ModelLoadError(f"{bundle.weights_path}: cannot load TorchScript "
                             f"({reason(exc)})") from exc
    return module.eval(), dev


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
                      self.bundle.stride, self.bundle.locref_stdev)


def load_runner(bundle: ModelBundle, **options: Any) -> PoseRunner:
    """Engine entry point used by :func:`posed.engines.compat.load_model`; bottom-up
    multi-animal bundles get a :class:`~posed.engines.base.MultiAnimalRunner`."""
    if "individuals" in bundle.architecture:
        from posed.engines.pytorch.multianimal import load_runner as load_multianimal

        return load_multianimal(bundle, **options)
    if bundle.format == "torchscript":
        return TorchScriptRunner.load(bundle, **options)
    return TorchRunner.load(bundle, **options)


EXPORT_FORMATS = ("torchscript", "onnx")


def export(bundle: ModelBundle, fmt: str, out: Path, **options: Any) -> Path:
    """Export a PyTorch bundle to ``torchscript`` or ``onnx`` (see :mod:`posed.exporters.torch`)."""
    from posed.exporters import torch as exporters

    if fmt == "torchscript":
        return exporters.export_torchscript(bundle, out, **options)
    if fmt == "onnx":
        return exporters.export_onnx(bundle, out, **options)
    raise ConfigError(f"format '{fmt}': the pytorch engine exports {', '.join(EXPORT_FORMATS)}")


# ----------------------------------------------------------------------------- training

def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _collate(samples: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    out = {k: torch.from_numpy(np.stack([s[k] for s in samples])) for k in samples[0]}
    out["image"] = out["image"].permute(0, 3, 1, 2).float()
    return out


class _TorchSamples(torch.utils.data.Dataset):
    """Map-style dataset over :class:`SampleMaker`, with a per-(epoch, index) RNG."""

    def __init__(self, maker: SampleMaker, seed: int) -> None:
        self.maker = maker
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.maker)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        return self.maker.sample(index, rng)


def pose_loss(heat: torch.Tensor, locref: torch.Tensor, batch: dict[str, torch.Tensor],
              locref_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted BCE on heatmaps + weighted Huber on locref; returns (total, heatmap, locref)."""
    hw = batch["heatmap_weight"].expand_as(heat)
    hm = F.binary_cross_entropy_with_logits(heat, batch["heatmap"], weight=hw, reduction="sum")
    hm = hm / hw.sum().clamp(min=1.0)
    lw = batch["locref_weight"]
    lr_ = F.huber_loss(locref * lw, batch["locref"] * lw, reduction="sum") / lw.sum().clamp(min=1.0)
    return hm + locref_weight * lr_, hm, lr_


def _save_resume_state(path: Path, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors = {}
    for pid, pstate in state["state"].items():
        for name, value in pstate.items():
            tensors[f"state.{pid}.{name}"] = torch.as_tensor(value).contiguous()
    meta = {"param_groups": json.dumps(state["param_groups"]), "epoch": str(epoch),
            "torch_rng": json.dumps(torch.get_rng_state().tolist())}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_resume_state(path: Path, optimizer: torch.optim.Optimizer) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key in fh.keys():
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = fh.get_tensor(key)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    torch.set_rng_state(torch.tensor(json.loads(meta["torch_rng"]), dtype=torch.uint8))
    return int(meta["epoch"])


def _bundle_for(project: Project, shuffle: int, cfg: TrainConfig, model: PoseNet, epoch: int) -> ModelBundle:
    if hasattr(model, "paf_edges"):
        from posed.engines.pytorch.multianimal import bundle_for

        return bundle_for(project, shuffle, cfg, model, epoch)
    return ModelBundle(
        engine=ENGINE, format="safetensors", bodyparts=list(project.bodyparts),
        architecture={"net": cfg.net, "output_stride": cfg.output_stride, "head": "deconv3x3s2",
                      "timm_model": TIMM_NAMES[cfg.net], "score": model.score},
        stride=float(model.stride), locref_stdev=cfg.target.locref_stdev,
        source=bundle_source(project, shuffle, cfg, epoch),
    )


def _mean_error(model: PoseNet, images: list[np.ndarray], keypoints: list[np.ndarray],
                locref_stdev: float) -> float:
    """Mean pixel error of ``model`` on full images (NaN when nothing is labelled)."""
    errs = []
    model.eval()
    with torch.inference_mode():
        for img, kp in zip(images, keypoints):
            heat, loc = model(torch.from_numpy(img).permute(2, 0, 1)[None].float())
            pred = decode(model.probabilities(heat).numpy(), loc.numpy(), model.stride, locref_stdev)[0]
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
        from posed.engines.pytorch.multianimal import train as train_bottom_up

        return train_bottom_up(project, shuffle, overrides, progress=progress, resume=resume)
    cfg, folder, existing = prepare_training(project, shuffle, overrides, resume)
    data = load_training_data(project, shuffle, cfg, compat.get_model_folder(project, shuffle, ENGINE))
    cfg = data.cfg
    model = PoseNet(cfg.net, len(project.bodyparts), cfg.output_stride, pretrained=cfg.pretrained)
    model.train()
    maker = SampleMaker(data.images, data.keypoints, cfg, model.grid_size, model.stride)

    def step(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        heat, locref = model(batch["image"])
        return pose_loss(heat, locref, batch, cfg.locref_loss_weight)

    return run_training(
        project, shuffle, cfg, folder, existing, resume, progress, model, maker, step,
        test_error=lambda: _mean_error(model, data.test_images, data.test_keypoints,
                                       cfg.target.locref_stdev))


def prepare_training(project: Project, shuffle: int, overrides: Any,
                     resume: bool) -> tuple[TrainConfig, Path, list[Path]]:
    """Resolved settings, the training folder (created) and its existing snapshots; seeds
    every RNG. Raises :class:`ConfigError` when snapshots exist and ``resume`` is not set."""
    cfg = resolve_train_config(project, shuffle, overrides, ENGINE, resume)
    folder = compat.get_train_folder(project, shuffle, ENGINE)
    existing = compat.list_snapshots(folder)
    if existing and not resume:
        raise ConfigError(f"{folder}: already has snapshots; pass --resume to continue or "
                          "--overwrite to start again")
    folder.mkdir(parents=True, exist_ok=True)
    _seed_everything(cfg.seed)
    return cfg, folder, existing


def run_training(project: Project, shuffle: int, cfg: TrainConfig, folder: Path,
                 existing: list[Path], resume: bool, progress: bool, model: torch.nn.Module,
                 maker: SampleMaker, step: Any, *, test_error: Any,
                 extra_losses: tuple[str, ...] = ()) -> Path:
    """The training loop every PyTorch model shares.

    Args:
        model: The network (weights restored here when resuming); its snapshots are
            described by :func:`_bundle_for`.
        maker: Sample generator.
        step: batch -> (total loss, heatmap loss, locref loss, *extra losses) tensors.
        test_error: () -> mean test error in pixels, run at each snapshot.
        extra_losses: Names of the extra losses (extra ``learning_stats.csv`` columns).

    Returns:
        The training folder.
    """
    from tqdm.auto import tqdm

    dataset = _TorchSamples(maker, cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=len(dataset) > cfg.batch_size,
        collate_fn=_collate, num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed), persistent_workers=cfg.num_workers > 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    start_epoch = 0
    if resume and existing:
        model.load_state_dict(load_state_dict(existing[-1]))
        start_epoch = resume_epoch(folder, existing, lambda f: _load_resume_state(f, optimizer))
        if start_epoch >= cfg.epochs:
            log.info("already trained to epoch %d (epochs=%d)", start_epoch, cfg.epochs)
            return folder

    stats = LearningStats(folder, cfg, start_epoch, extra_losses)
    steps_per_epoch = max(len(loader), 1)
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train {project.name} shuffle {shuffle}",
               unit="epoch", disable=not progress, initial=start_epoch, total=cfg.epochs)
    try:
        for epoch in bar:
            # Sample order and augmentation depend only on (seed, epoch), so a resumed run
            # sees exactly the batches an uninterrupted run would have seen.
            dataset.epoch = epoch
            loader.generator.manual_seed(cfg.seed * 100_003 + epoch)
            t0 = time.perf_counter()
            totals = np.zeros(3 + len(extra_losses))
            for i, batch in enumerate(loader):
                lr = lr_at(cfg, epoch + i / steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                losses = step(batch)
                optimizer.zero_grad(set_to_none=True)
                losses[0].backward()
                optimizer.step()
                totals += [v.item() for v in losses]
            totals /= steps_per_epoch
            done = epoch + 1
            test_err = float("nan")
            snapshot_due = done % cfg.save_every == 0 or done == cfg.epochs
            if snapshot_due:
                test_err = test_error()
                model.train()
            stats.row(done, lr, totals, time.perf_counter() - t0, test_err)
            if snapshot_due:
                _save_snapshot(folder, project, shuffle, cfg, model, optimizer, done)
            bar.set_postfix(loss=f"{totals[0]:.4f}", **({} if np.isnan(test_err) else {"test_px": f"{test_err:.2f}"}))
    finally:
        stats.close()
        bar.close()
    return folder


def _save_snapshot(folder: Path, project: Project, shuffle: int, cfg: TrainConfig, model: PoseNet,
                   optimizer: torch.optim.Optimizer, epoch: int) -> None:
    from safetensors.torch import save_file

    name = snapshot_name(epoch)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / name) as tmp:
        save_file(state, str(tmp), metadata={"epoch": str(epoch), "net": cfg.net})
    _save_resume_state(folder / RESUME_FILE, optimizer, epoch)
    # posed.yaml is written last, so it never names a file that is not complete.
    _bundle_for(project, shuffle, cfg, model, epoch).save(folder, [name])
