"""Benchmark: train and evaluate on DeepLabCut's openfield example project (not a test).

Copies ``../shared/data/dlc-examples/openfield-Pranav-2018-10-30`` (or ``--project DIR``,
e.g. the Reaching example) to a work folder, trains
shuffle 1 from the command line's settings, evaluates it, and writes a JSON record (machine,
versions, settings, wall times, per-body-part errors) to ``benchmarks/results/``.

The example data is DeepLabCut's (Nath*, Mathis* et al., Nature Protocols 2019); see
``../shared/data/dlc-examples/SOURCE.md`` for its origin and terms. Nothing of it is copied
into this repository.

    python benchmarks/train_openfield.py                       # posed's recipe for random init
    python benchmarks/train_openfield.py --epochs 60 --lr 3e-3  # any setting overrides it
    python benchmarks/train_openfield.py --budget 22            # what 22 minutes buy
    python benchmarks/train_openfield.py --project ../shared/data/dlc-examples/Reaching-Mackenzie-2018-08-30

Settings not given come from the training recipe (``recipe: auto``: ``scratch`` without
pretrained weights). The test error at every ``--save-every`` epochs, against the CPU time
spent so far, is the record's ``curve``. Each run is evaluated again with test-time flips
(``posed evaluate --flip-test``): the record's ``flip_test``; and on its test and training
images turned by 90, 180 and 270 degrees: ``rotated``. ``--add flip_test rotated`` adds
either to an existing record from the model kept in ``--workdir``, without training.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

from posed.engines import api  # noqa: E402
from posed.engines.io import atomic_write_text  # noqa: E402
from posed.engines.project import load_project  # noqa: E402
from posed.engines.project.labelcheck import check_project, swap_pairs  # noqa: E402
from posed.engines.project.labels import load_labels  # noqa: E402
from posed.engines.project.split import load_split  # noqa: E402

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "dlc-examples" / "openfield-Pranav-2018-10-30"


def curve(stats: Path, cores_busy: float) -> list[dict[str, float]]:
    """(CPU-minutes, mean test error) at each epoch that has one: wall seconds of the epochs
    so far (their training; since 2026-12-07 without the snapshot evaluations) times the
    run's average busy cores (process CPU time over wall time)."""
    rows, wall, out = stats.read_text().splitlines(), 0.0, []
    head = rows[0].split(",")
    for line in rows[1:]:
        row = dict(zip(head, line.split(",")))
        wall += float(row["seconds"])
        if row.get("test_error_px"):
            out.append({"epoch": int(row["epoch"]), "cpu_minutes": round(wall * cores_busy / 60, 2),
                        "test_error_px": round(float(row["test_error_px"]), 3)})
    return out


def torch_threads() -> int:
    """PyTorch's intra-op threads in this run: results differ between thread counts."""
    import torch

    return torch.get_num_threads()


def cpu_capability() -> str:
    """The instruction set PyTorch's own kernels use (``avx2`` under ``ATEN_CPU_CAPABILITY``)."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def labels_swapped_back(project, result) -> dict:
    """The test error again, against labels whose left/right pairs ``posed check-labels``
    flags as swapped, swapped back (openfield: one test image). The headline figures stay
    those against the labels as given; this says how much of them the flagged labels are."""
    issues = check_project(project)
    labels = load_labels(project, check_images=False)
    fixed = swap_pairs(labels.keypoints, labels.images, issues, list(labels.bodyparts))
    row = {img: i for i, img in enumerate(labels.images)}
    pred = pd.read_hdf(next(result.folder.glob("predictions*.h5")))
    test = [img for img in load_split(project, 1).test if img in row]
    xy = pred.loc[test].to_numpy(dtype=float).reshape(len(test), -1, 3)[..., :2]
    d = np.linalg.norm(xy - fixed[[row[i] for i in test]], axis=2)
    d = d[np.isfinite(d)]
    return {"flagged": [i.format() for i in issues],
            "flagged_test_images": sorted({i.image for i in issues} & set(test)),
            "test_error_px": round(float(d.mean()), 3),
            "test_median_px": round(float(np.median(d)), 3)}


def flip_test(project) -> dict:
    """Test-set figures of ``posed evaluate --flip-test`` on the trained shuffle 1, as given
    and with flagged left/right labels swapped back."""
    from posed.engines.fliptest import project_pairs

    t0 = time.perf_counter()
    result = api.evaluate_network(project, 1, "pytorch", runner_options={"flip_test": True})
    test = result.table.loc[("test", "all")]
    return {"pairs": project_pairs(api.resolve_bundle(project.root, "pytorch")),
            "evaluate_seconds": round(time.perf_counter() - t0, 1),
            "test_error_px": round(float(test["error_px"]), 3),
            "test_median_px": round(float(test["median_px"]), 3),
            "test_pck@2": round(float(test["pck@2"]), 3),
            "test_pck@5": round(float(test["pck@5"]), 3),
            "errors": json.loads(result.table.reset_index().to_json(orient="records")),
            "labels_swapped_back": labels_swapped_back(project, result)}


def rot90_points(xy: np.ndarray, width: int, height: int, k: int) -> np.ndarray:
    """Pixel coordinates ``xy`` (..., 2) of a ``width`` x ``height`` image after
    ``np.rot90(image, k)`` (k quarter turns counter-clockwise as displayed)."""
    xy = xy.copy()
    for _ in range(k % 4):
        xy = np.stack([xy[..., 1], width - 1 - xy[..., 0]], axis=-1)
        width, height = height, width
    return xy


def rotated_test(project) -> dict:
    """Error of the trained shuffle 1 on its test and training images turned by 90, 180 and
    270 degrees (labels turned with them). A top-down camera sees the animal face any way; the
    labelled frames may not show every heading, so this measures whether the model finds
    the animal facing ways its labels never showed."""
    from posed.engines.project import load_image

    labels = load_labels(project, check_images=False)
    row = {img: i for i, img in enumerate(labels.images)}
    split = load_split(project, 1)
    out: dict = {}
    with api.load_model(api.resolve_bundle(project.root, "pytorch"), device="cpu") as runner:
        for part, names in (("test", split.test), ("train", split.train)):
            names = [n for n in names if n in row]
            images = [load_image(project.root, n) for n in names]
            truth = labels.keypoints[[row[n] for n in names]]
            out[part] = {}
            for k in range(4):
                dists = []
                for image, xy in zip(images, truth):
                    h, w = image.shape[:2]
                    pose = runner.predict(np.ascontiguousarray(np.rot90(image, k))[None])[0]
                    dists.append(np.linalg.norm(pose[:, :2] - rot90_points(xy, w, h, k), axis=1))
                d = np.concatenate(dists)
                d = d[np.isfinite(d)]
                out[part][str(90 * k)] = {"error_px": round(float(d.mean()), 3),
                                          "median_px": round(float(np.median(d)), 3),
                                          "pck@5": round(float((d <= 5).mean()), 3)}
    return out


ADDABLE = {"flip_test": flip_test, "rotated": rotated_test}


def add_to_record(work: Path, data: Path, out: Path, keys: list[str]) -> int:
    """``--add``: figures of the model kept in ``work`` (``flip_test``, ``rotated``) added
    to the record ``out``, without training."""
    proj_dir = work / data.name
    if not (proj_dir / "config.yaml").is_file() or not out.is_file():
        print(f"error: --add needs the kept project {proj_dir} and the record {out}",
              file=sys.stderr)
        return 1
    record = json.loads(out.read_text())
    for key in keys:
        record[key] = ADDABLE[key](load_project(proj_dir))
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    print(f"added {', '.join(keys)}; written {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project", type=Path, default=DATA,
                    help="DeepLabCut project to copy and train (default: openfield)")
    ap.add_argument("--net", default="mobilenet_v2_0.35")
    ap.add_argument("--epochs", type=int, help="default: the recipe's")
    ap.add_argument("--output-stride", type=int, help="default: the recipe's")
    ap.add_argument("--lr", type=float, help="default: the recipe's")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", help="training crop WxH (default: the recipe's, 320x320 for "
                    "frames larger than that)")
    ap.add_argument("--crop-sampling", choices=("centred", "uniform", "hybrid"),
                    help="where crops are cut (default: the training default)")
    ap.add_argument("--save-every", type=int, default=10, help="epochs between test points")
    ap.add_argument("--budget", type=float, metavar="MINUTES",
                    help="posed train --budget: wall-clock minutes for training (default: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-config", type=Path, help="YAML of further training settings")
    ap.add_argument("--workdir", type=Path, help="keep the trained project here (default: temp)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_openfield.json")
    ap.add_argument("--add", nargs="+", choices=sorted(ADDABLE),
                    help="no training: add these figures of the model kept in --workdir to "
                    "the record --out")
    args = ap.parse_args()
    data = args.project.resolve()
    if not (data / "config.yaml").is_file():
        print(f"error: {data / 'config.yaml'}: example project not found", file=sys.stderr)
        return 1
    if args.add:
        if args.workdir is None:
            print("error: --add needs --workdir", file=sys.stderr)
            return 1
        return add_to_record(args.workdir, data, args.out, args.add)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="posed-openfield-"))
    proj_dir = work / data.name
    if proj_dir.exists():
        shutil.rmtree(proj_dir)
    shutil.copytree(data, proj_dir)
    for p in proj_dir.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)  # shared/ is read-only; the copy must be writable
    project = load_project(proj_dir)
    crop = [int(v) for v in args.crop.split("x")] if args.crop else None
    settings = {"net": args.net, "epochs": args.epochs, "output_stride": args.output_stride,
                "lr": args.lr, "batch_size": args.batch_size, "crop": crop,
                "save_every": args.save_every, "seed": args.seed,
                "crop_sampling": args.crop_sampling, "budget_minutes": args.budget}
    if args.train_config:
        settings.update(yaml.safe_load(args.train_config.read_text()) or {})
    t0, c0 = time.perf_counter(), time.process_time()
    folder = api.train_network(project, 1, "pytorch", dict(settings))
    train_s, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    result = api.evaluate_network(project, 1, "pytorch")
    eval_s = time.perf_counter() - t0
    print(result.format())
    table = result.table.reset_index()
    record = {
        "benchmark": "train_openfield",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "threads": torch_threads(),
        "cpu_capability": cpu_capability(),
        "data": data.name,
        "settings": settings,
        "resolved": yaml.safe_load((folder / "train_config.yaml").read_text()),
        "pretrained": False,
        "train_images": int(result.table.loc[("train", "all"), "n"] // len(project.bodyparts)),
        "test_images": int(result.table.loc[("test", "all"), "n"] // len(project.bodyparts)),
        "train_seconds": round(train_s, 1),
        "train_cpu_minutes": round(train_cpu / 60.0, 2),
        "evaluate_seconds": round(eval_s, 1),
        "curve": curve(folder / "learning_stats.csv", train_cpu / max(train_s, 1e-9)),
        "pcutoff": result.pcutoff,
        "pck_px": result.pck_px,
        "errors": json.loads(table.to_json(orient="records")),
        "labels_swapped_back": labels_swapped_back(project, result),
        "flip_test": flip_test(project),
        "rotated": rotated_test(project),
        "learning_stats": (folder / "learning_stats.csv").read_text(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(record, indent=2) + "\n")
    print(f"test error {result.table.loc[('test', 'all'), 'error_px']:.2f} px; "
          f"train {train_s:.0f} s; written {args.out}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
