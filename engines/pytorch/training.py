"""The PyTorch training loop shared by the single-animal and bottom-up models.

Snapshots are ``snapshot-NNN.safetensors`` (weights only) beside ``posed.yaml``, so the
training folder is a model bundle with no pickle in it. The optimiser state needed to resume
lives in ``resume-state.safetensors`` (tensors) with its settings as JSON metadata. What
needs no framework (settings, folders, the epoch loop, ``learning_stats.csv``) is
:mod:`posed.engines.backend_common`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn import functional as F

from posed.engines import backend_common as common
from posed.engines.backend_common import StepClock, run_epochs, write_snapshot
from posed.engines.bundle import ModelBundle
from posed.engines.io import atomic_path
from posed.engines.project import Project
from posed.engines.pytorch.model import load_state_dict
from posed.engines.training import SampleMaker, TrainConfig, lr_at
from posed.engines.registry import Engine

ENGINE = Engine.PYTORCH.value


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


def prepare_training(project: Project, shuffle: int, overrides: Any,
                     resume: bool) -> tuple[TrainConfig, Path, list[Path]]:
    """Resolved settings, the training folder (created) and its existing snapshots; seeds
    every RNG. Raises :class:`ConfigError` when snapshots exist and ``resume`` is not set."""
    return common.prepare_training(project, shuffle, overrides, ENGINE, resume,
                                   seed=_seed_everything)


def run_training(project: Project, shuffle: int, cfg: TrainConfig, folder: Path,
                 existing: list[Path], resume: bool, progress: bool, model: torch.nn.Module,
                 maker: SampleMaker, step: Any, *, test_error: Any,
                 bundle_for: Callable[[int], ModelBundle],
                 extra_losses: tuple[str, ...] = (),
                 before_epoch: Callable[[int], None] | None = None) -> Path:
    """The training loop every PyTorch model shares (around
    :func:`posed.engines.backend_common.run_epochs`).

    Args:
        model: The network (weights restored here when resuming).
        maker: Sample generator.
        step: batch -> (total loss, heatmap loss, locref loss, *extra losses) tensors.
        test_error: () -> mean test error in pixels, run at each snapshot.
        bundle_for: epoch -> the bundle describing that epoch's snapshot.
        extra_losses: Names of the extra losses (extra ``learning_stats.csv`` columns).
        before_epoch: Called with the epoch (from 0) before it runs (pseudo-labelling).

    Returns:
        The training folder.
    """
    # Channels-last weights make the convolutions (and their backward, most of a step) run in
    # oneDNN's NHWC kernels: about 20 % faster per step for MobileNet on one AVX2 core.
    # Snapshots are saved contiguous, so files are unchanged.
    model.to(memory_format=torch.channels_last)
    dataset = _TorchSamples(maker, cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=len(dataset) > cfg.batch_size,
        collate_fn=_collate, num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed), persistent_workers=cfg.num_workers > 0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(len(loader), 1)

    def train_epoch(epoch: int, cfg: TrainConfig, clock: StepClock) -> tuple[np.ndarray, float]:
        # Sample order and augmentation depend only on (seed, epoch), so a resumed run
        # sees exactly the batches an uninterrupted run would have seen.
        if before_epoch is not None:
            before_epoch(epoch)
            model.train()
        dataset.epoch = epoch
        loader.generator.manual_seed(cfg.seed * 100_003 + epoch)
        totals, lr = np.zeros(3 + len(extra_losses)), cfg.lr
        for i, batch in enumerate(loader):
            lr = lr_at(cfg, epoch + i / steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            losses = step(batch)
            optimizer.zero_grad(set_to_none=True)
            losses[0].backward()
            optimizer.step()
            totals += [v.item() for v in losses]
            clock.tick()
        return totals / steps_per_epoch, lr

    def evaluate() -> float:
        error = test_error()
        model.train()
        return error

    def save(epoch: int) -> None:
        write_snapshot(folder, epoch, bundle_for(epoch),
                       lambda path: _save_weights(model, path, epoch, cfg.net),
                       lambda path: _save_resume_state(path, optimizer, epoch))

    return run_epochs(
        project, shuffle, cfg, folder, existing, resume=resume, progress=progress,
        restore=lambda snapshot: model.load_state_dict(load_state_dict(snapshot)),
        load_state=lambda path: _load_resume_state(path, optimizer), train_epoch=train_epoch,
        test_error=evaluate, save_snapshot=save, extra_losses=extra_losses)


def _save_weights(model: torch.nn.Module, path: Path, epoch: int, net: str) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"epoch": str(epoch), "net": net})
