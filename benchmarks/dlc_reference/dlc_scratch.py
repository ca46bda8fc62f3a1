"""DeepLabCut 3.0.2 trained from random init on a DeepLabCut project, for posed's comparison
at the same CPU time (issue 22). Run it in a DeepLabCut venv (see README.md here):

    python benchmarks/dlc_reference/dlc_scratch.py PROJECT --split SPLIT.yaml \
        --cpu-minutes 30 --out benchmarks/results/dlc_scratch_reaching-<machine>.json

``SPLIT.yaml`` is posed's split of shuffle 1 (``training-datasets/iteration-0/posed/
split-shuffle1.yaml`` in a copy of the project that posed trained, or made by
``posed.engines.project.split.create_split``), so that
both tools are scored on the same test images. The project is copied first; DeepLabCut's
defaults are kept (its ``default_net_type``, augmentation, batch size, schedule) but for the
backbone's ImageNet weights: training starts from a snapshot of DeepLabCut's own model with
random weights (3.0.2 loads ImageNet weights otherwise). Training runs in a child
process that saves a snapshot every epoch; the parent notes the child's CPU time (its threads
and its data-loading workers) when each snapshot appears and stops it at ``--cpu-minutes``.
Every snapshot is then evaluated by DeepLabCut's own ``evaluate_network``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import yaml

TICKS = os.sysconf("SC_CLK_TCK")
EVALUATED = 6


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and every process below it, from /proc."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
            for task in Path(f"/proc/{p}/task").iterdir():
                kids = task / "children"
                if kids.exists():
                    todo += [int(c) for c in kids.read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def prepare(project: Path, work: Path, split: dict) -> Path:
    """A copy of ``project`` with a DeepLabCut-ready config and shuffle 1 on ``split``."""
    import deeplabcut
    from deeplabcut.generate_training_dataset.trainingsetmanipulation import (
        merge_annotateddatasets)
    from deeplabcut.utils import auxiliaryfunctions

    root = work / project.name
    shutil.copytree(project, root)
    for p in root.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    config = root / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    cfg["project_path"] = str(root)
    crop = next(iter(cfg["video_sets"].values()))
    # The example's video_sets is a placeholder; DeepLabCut finds labels by the folder name.
    cfg["video_sets"] = {str(root / "videos" / f"{d.name}.avi"): crop
                         for d in sorted((root / "labeled-data").iterdir()) if d.is_dir()}
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cfg = auxiliaryfunctions.read_config(str(config))
    folder = root / auxiliaryfunctions.get_training_set_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    data = merge_annotateddatasets(cfg, folder)
    names = ["/".join(i) if isinstance(i, tuple) else str(i) for i in data.index]
    index = {n: i for i, n in enumerate(names)}
    train = [index[n] for n in split["train"]]
    test = [index[n] for n in split["test"]]
    deeplabcut.create_training_dataset(str(config), Shuffles=[1], trainIndices=[train],
                                       testIndices=[test], userfeedback=False,
                                       engine=deeplabcut.Engine.PYTORCH)
    (pose_cfg,) = root.glob("dlc-models-pytorch/iteration-0/*shuffle1/train/pytorch_config.yaml")
    pc = yaml.safe_load(pose_cfg.read_text())
    pc["model"]["backbone"]["pretrained"] = False  # random init: nothing is downloaded
    # DeepLabCut keeps its last 5 snapshots; the curve needs every one.
    pc["runner"]["snapshots"]["max_snapshots"] = 100_000
    pose_cfg.write_text(yaml.safe_dump(pc, sort_keys=False))
    return config


def _train(config: str, epochs: int, pose_cfg: str, init: str) -> None:
    import deeplabcut
    import torch
    from deeplabcut.pose_estimation_pytorch.models.model import PoseModel

    # DeepLabCut 3.0.2's train_network loads ImageNet weights unless it starts from a snapshot
    # (or a weight_init), whatever the backbone's `pretrained` says: start it from a snapshot
    # of its own model, built with random weights.
    torch.manual_seed(0)
    model = PoseModel.build(yaml.safe_load(Path(pose_cfg).read_text())["model"],
                            pretrained_backbone=False)
    torch.save({"model": model.state_dict()}, init)
    deeplabcut.train_network(config, shuffle=1, epochs=epochs, save_epochs=1,
                             max_snapshots_to_keep=100_000, device="cpu", snapshot_path=init)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("project", type=Path)
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument("--cpu-minutes", type=float, default=30.0)
    ap.add_argument("--max-epochs", type=int, default=1000)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import deeplabcut
    import torch

    split = {k: list(v) for k, v in yaml.safe_load(args.split.read_text()).items()
             if k in ("train", "test")}
    work = Path(tempfile.mkdtemp(prefix="dlc-scratch-"))
    config = prepare(args.project.resolve(), work, split)
    (train_dir,) = config.parent.glob("dlc-models-pytorch/iteration-0/*shuffle1/train")
    child = mp.get_context("spawn").Process(target=_train, args=(
        str(config), args.max_epochs, str(train_dir / "pytorch_config.yaml"),
        str(work / "random-init.pt")))
    start = time.monotonic()
    child.start()
    seen: dict[str, float] = {}
    cpu = 0.0
    while child.is_alive() and cpu < args.cpu_minutes * 60:
        time.sleep(2.0)
        cpu = max(cpu, cpu_seconds(child.pid))
        for snap in train_dir.glob("snapshot-[0-9]*.pt"):
            seen.setdefault(snap.name, cpu)
    child.terminate()
    child.join()
    wall = time.monotonic() - start
    for snap in train_dir.glob("snapshot-[0-9]*.pt"):
        seen.setdefault(snap.name, cpu)
    snaps = sorted(seen)
    # A snapshot being written when the child stopped is dropped: it may be incomplete.
    for name in snaps:
        try:
            torch.load(train_dir / name, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - any unreadable or vanished file is left out
            (train_dir / name).unlink(missing_ok=True)
            del seen[name]
    # Each evaluation reads every image (about a minute here): at most EVALUATED snapshots,
    # spread evenly, the last always among them.
    names = sorted(seen)
    step = max(1, -(-len(names) // EVALUATED))
    chosen = [names[i] for i in sorted({*range(len(names) - 1, -1, -step)})]
    deeplabcut.evaluate_network(str(config), shuffles=[1],
                                snapshots_to_evaluate=[Path(n).stem for n in chosen])
    (results,) = config.parent.glob("evaluation-results-pytorch/iteration-0/"
                                    "CombinedEvaluation-results.csv")
    import pandas as pd

    table = pd.read_csv(results)
    rows = []
    for _, r in table.iterrows():
        epoch = int(r["Training epochs"])
        name = f"snapshot-{epoch:03d}.pt"
        rows.append({"epoch": epoch, "cpu_minutes": round(seen.get(name, float("nan")) / 60, 2),
                     "train_error_px": float(r["train rmse"]),
                     "test_error_px": float(r["test rmse"]),
                     **{k: float(r[k]) for k in r.index if "pcutoff" in k}})
    record = {
        "benchmark": "dlc_scratch", "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "machine": {"cpu": platform.processor() or _cpu_name(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "versions": {"deeplabcut": deeplabcut.__version__, "torch": torch.__version__},
        "project": args.project.name, "split": {k: len(v) for k, v in split.items()},
        "test_images": split["test"], "cpu_minutes_budget": args.cpu_minutes,
        "wall_seconds": round(wall, 1), "curve": rows,
        "pytorch_config": yaml.safe_load(next(train_dir.glob("pytorch_config.yaml")).read_text()),
    }
    args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(json.dumps(rows, indent=1))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return ""


if __name__ == "__main__":
    main()
