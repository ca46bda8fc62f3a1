"""Spread of the multi-animal test model's accuracy over training seeds and CPU instruction sets.

Trains the model of ``tests/test_multianimal_model.py`` (same project, same arguments, one
thread) once per seed, natively and with PyTorch, oneDNN and MKL held to AVX2 (what an AVX2-only
CPU computes), and evaluates each on the test images. The test's bounds are set below the
worst of these figures; the figures themselves live here, not in the test.

    python benchmarks/multianimal_spread.py [--seeds 0 1 2] [--isa native avx2]

Writes ``benchmarks/results/multianimal_spread.json``. About 4 CPU-minutes per run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from posed.bench import AVX2_LIMITS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def one_run(seed: int) -> dict:
    """Train and evaluate once in this process (called in a child with the ISA settings)."""
    import time

    import pandas as pd
    import torch
    from test_multianimal_model import SIGMA, TRAIN_ARGS, VIDEO_FRAMES

    from posed.cli import main
    from posed.engines import api
    from posed.engines.project import load_project
    from posed.engines.synth import generate_multianimal_project

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp()) / "proj"
    generate_multianimal_project(root, animals=3, frames=120, size=(128, 128), seed=0,
                                 video_frames=VIDEO_FRAMES)
    start = time.perf_counter()
    assert main(["train", str(root), *TRAIN_ARGS, "--seed", str(seed), "-q"]) == 0
    train_s = time.perf_counter() - start
    result = api.evaluate_network(load_project(root), 1, sigma=SIGMA)
    test = result.table.loc["test", "all"]
    ap = pd.read_csv(result.folder / "map.csv", index_col=0).loc["test"]
    return {"seed": seed, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "error_px": round(float(test["error_px"]), 3), "found": round(float(test["found"]), 3),
            "pck": round(float(test["pck"]), 3), "AP50": round(float(ap["AP50"]), 3),
            "mAP": round(float(ap["mAP"]), 3), "train_s": round(train_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--isa", nargs="+", choices=["native", "avx2"], default=["native", "avx2"])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--out", type=Path, default=HERE / "results" / "multianimal_spread.json")
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_run(args.one)))
        return
    from _machine import machine_info

    runs = []
    for isa in args.isa:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **(AVX2_LIMITS if isa == "avx2" else {})}
        for seed in args.seeds:
            proc = subprocess.run([sys.executable, __file__, "--one", str(seed)], env=env,
                                  capture_output=True, text=True, check=True)
            runs.append({"isa": isa, **json.loads(proc.stdout.strip().splitlines()[-1])})
            print(json.dumps(runs[-1]), flush=True)
    worst = {k: (max if k == "error_px" else min)(r[k] for r in runs)
             for k in ("error_px", "found", "pck", "AP50", "mAP")}
    record = {"date": datetime.date.today().isoformat(), "machine": machine_info(),
              "runs": runs, "worst": worst}
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
