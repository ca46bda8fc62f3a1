"""The re-identification (ReID) model of multi-animal tracking, in the PyTorch engine.

A small convolutional embedding of animal crops, trained with a triplet loss on the
tracklets of :func:`posed.engines.api.create_tracking_dataset` (two crops of one tracklet
show the same animal; crops of two tracklets seen in the same frame show different animals).
:func:`posed.engines.tracking.stitch_tracklets` uses its per-tracklet mean embeddings as
``features``. Framework-free code reaches it through the registry:
``capability(Engine.PYTORCH, "train_reid")`` and ``capability(Engine.PYTORCH, "load_reid")``
(:class:`ReIDModel`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from posed.engines.io import atomic_path, atomic_write_text
from posed.engines.pytorch.model import load_state_dict
from posed.errors import DataError, InferenceError, ModelLoadError, reason

__all__ = ["REID_FILE", "REID_META", "ReIDModel", "ReIDNet", "train_reid"]

log = logging.getLogger(__name__)

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
        dataset: The ``.npz`` written by :func:`posed.engines.api.create_tracking_dataset`.
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
            raise ModelLoadError(f"{meta_file}: not a ReID description ({reason(exc)})") from None
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
