"""Drawing DeepLabCut-style network maps over an image: score maps, location refinement, PAFs.

The figures are matplotlib ``Figure`` objects without a window (Agg canvas), so they work
headless; ``fig.savefig`` writes them. Maps may be smaller than the image (one cell per
stride pixels); they are stretched over it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from posed.engines.offline.plotting import _figure

__all__ = ["extract_maps", "save_all_maps", "show_locrefs", "show_paf", "show_scoremap"]


def _base(image: Any) -> tuple[Any, Any, np.ndarray]:
    img = np.asarray(image)
    fig = _figure(6.4, 6.4 * img.shape[0] / max(img.shape[1], 1))
    ax = fig.add_subplot()
    ax.imshow(img)
    ax.set_axis_off()
    return fig, ax, img


def _extent(img: np.ndarray) -> tuple[float, float, float, float]:
    return (-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5)


def show_scoremap(image: Any, scmap: Any) -> tuple[Any, Any]:
    """``scmap`` (H'×W', or H'×W'×K summed over parts) over ``image``."""
    fig, ax, img = _base(image)
    maps = np.asarray(scmap, dtype=float)
    if maps.ndim == 3:
        maps = maps.sum(axis=2)
    ax.imshow(maps, alpha=0.5, cmap="jet", extent=_extent(img), interpolation="bilinear")
    return fig, ax


def show_locrefs(image: Any, scmap: Any, locref_x: Any, locref_y: Any, step: int = 5,
                 zoom_width: int = 0) -> tuple[Any, Any]:
    """Score map plus every ``step``-th location-refinement vector (in map cells);
    ``zoom_width`` > 0 zooms on a square of that many pixels around the score peak."""
    fig, ax = show_scoremap(image, scmap)
    img = np.asarray(image)
    maps = np.asarray(scmap, dtype=float)
    maps = maps.sum(axis=2) if maps.ndim == 3 else maps
    lx, ly = np.asarray(locref_x, dtype=float), np.asarray(locref_y, dtype=float)
    h, w = maps.shape
    sy, sx = img.shape[0] / h, img.shape[1] / w
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    ax.quiver((xs + 0.5) * sx, (ys + 0.5) * sy, lx[ys, xs], ly[ys, xs], color="r",
              angles="xy", scale_units="xy", scale=1)
    if zoom_width > 0:
        py, px = np.unravel_index(np.argmax(maps), maps.shape)
        cx, cy = (px + 0.5) * sx, (py + 0.5) * sy
        ax.set_xlim(cx - zoom_width / 2, cx + zoom_width / 2)
        ax.set_ylim(cy + zoom_width / 2, cy - zoom_width / 2)
    return fig, ax


def show_paf(image: Any, paf: Any, step: int = 5, colors: Any = None) -> tuple[Any, Any]:
    """Part-affinity fields (H'×W'×2L: x and y of each limb in turn) as arrows, one colour
    per limb."""
    fig, ax, img = _base(image)
    fields = np.asarray(paf, dtype=float)
    h, w = fields.shape[:2]
    sy, sx = img.shape[0] / h, img.shape[1] / w
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    limbs = fields.shape[2] // 2
    palette = colors if colors is not None else [f"C{i % 10}" for i in range(limbs)]
    for i in range(limbs):
        u, v = fields[ys, xs, 2 * i], fields[ys, xs, 2 * i + 1]
        keep = np.hypot(u, v) > 1e-3
        ax.quiver(((xs + 0.5) * sx)[keep], ((ys + 0.5) * sy)[keep], u[keep], v[keep],
                  color=palette[i % len(palette)], angles="xy")
    return fig, ax


# ----------------------------------------------------------------------------- extraction

def extract_maps(project: Any, shuffle: int, trainingsetindex: int = 0, indices: Any = None,
                 modelprefix: str = "", engine: Any = None, runner_options: dict | None = None,
                 snapshot_index: Any = None) -> dict:
    """DeepLabCut's ``extract_maps`` for a shuffle (posed's or DeepLabCut's, PyTorch engine):
    ``{train_fraction: {snapshot name: {image index: (image, scmap, locref, paf, peaks,
    bodyparts, paf_graph, image name, is_train)}}}`` over the labelled images in DeepLabCut's
    order (``indices`` picks some). ``image`` is H×W×3 in 0..1, ``scmap`` a list of K h×w
    score maps, ``locref`` a list of 2K h×w fields in pixels (offset × stride), ``paf`` empty
    and ``peaks`` None, as DeepLabCut's for heatmap models."""
    from posed.engines.dlc.datasets import dlc_image_order
    from posed.engines.dlc.layout import find_shuffle
    from posed.engines.loading import load_model, resolve_bundle
    from posed.engines.project import load_image, load_split
    from posed.errors import CapabilityError

    images = dlc_image_order(project)
    picked = list(range(len(images))) if indices is None else [int(i) for i in indices]
    train = set(load_split(project, shuffle).train)
    found = find_shuffle(project, shuffle, trainingsetindex, modelprefix)
    snapshots = [None] if found is None else _snapshots(found, snapshot_index)
    fraction = project.training_fraction[trainingsetindex]
    out: dict = {fraction: {}}
    for snap in snapshots:
        bundle = resolve_bundle(project.root, engine, shuffle=shuffle,
                                snapshot=None if snap is None else snap.epoch,
                                trainingsetindex=trainingsetindex, modelprefix=modelprefix,
                                snapshot_index=snapshot_index)
        name = snap.path.stem if snap is not None else f"snapshot-{bundle.source.get('snapshot')}"
        with load_model(bundle, engine, **(runner_options or {})) as runner:
            if not hasattr(runner, "maps"):
                raise CapabilityError(f"extract_maps: the {runner.engine} engine does not expose "
                                      "score maps (the pytorch engine does)")
            entry = out[fraction][name] = {}
            for i in picked:
                image = load_image(project.root, images[i])
                scores, locref = runner.maps(image[None])
                entry[i] = (image.astype(np.float32) / 255.0, list(scores[0]),
                            list(locref[0] * bundle.stride), [], None, list(bundle.bodyparts),
                            [], Path(images[i]).stem, images[i] in train)
    return out


def _snapshots(found: Any, index: Any) -> list:
    from posed.engines.dlc.layout import snapshot_index_setting

    index = snapshot_index_setting(found.project) if index is None else index
    if isinstance(index, str) and index.lower() == "all":
        return found.snapshots()
    return [found.snapshot(index)]


def save_all_maps(maps: dict, project: Any, shuffle: int, bodyparts: Any, folder: Any) -> Path:
    """Each image's score maps and location refinement over the image as PNGs, named
    ``<image>_<scmap|locref>_<train|test>_<shuffle>_<fraction>_<snapshot>.png``, in ``folder``
    (default: the shuffle's DeepLabCut evaluation folder ``maps/``)."""
    from posed.engines.dlc.layout import model_folder

    wanted = list(project.bodyparts) if bodyparts in (None, "all") else list(
        [bodyparts] if isinstance(bodyparts, str) else bodyparts)
    for frac, per_snapshot in maps.items():
        if folder is None:
            shuffle_folder = model_folder(project, shuffle, frac)
            dest = shuffle_folder.parent.parent.parent / "evaluation-results-pytorch" / \
                shuffle_folder.parent.name / shuffle_folder.name / "maps"
        else:
            dest = Path(folder)
        dest.mkdir(parents=True, exist_ok=True)
        for snap, per_image in per_snapshot.items():
            for image, scmap, locref, _, _, names, _, stem, is_train in per_image.values():
                keep = [names.index(b) for b in wanted if b in names]
                suffix = f"{'train' if is_train else 'test'}_{shuffle}_{frac}_{snap}"
                fig, _ = show_scoremap(image, np.stack([scmap[k] for k in keep], axis=2))
                fig.savefig(dest / f"{stem}_scmap_{suffix}.png")
                k = keep[0] if keep else 0
                fig, _ = show_locrefs(image, scmap[k], locref[2 * k], locref[2 * k + 1])
                fig.savefig(dest / f"{stem}_locref_{suffix}.png")
    return dest
