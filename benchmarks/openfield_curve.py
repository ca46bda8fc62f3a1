"""Benchmark summary: openfield test error against CPU-minutes over several training runs.

Reads records written by ``train_openfield.py`` (one per seed or setting), and writes

- a JSON summary: each run's final test errors and curve, and per label (runs with the same
  settings but the seed and CPU) the mean, spread (sample standard deviation) and range of
  the final test mean error over its runs;
- a plot (PNG, needs matplotlib: ``pip install posed[plots]``) of every run's curve, with the
  human labeller's error and DeepLabCut 3.0.2's random-init figure for reference.

    python benchmarks/openfield_curve.py results/train_openfield-hybrid-seed*.json \\
        results/train_openfield-seed0.json results/train_openfield-hybrid-pseudo04-seed0.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info  # noqa: E402

from posed.engines.io import atomic_path, atomic_write_text  # noqa: E402

HERE = Path(__file__).resolve().parent
HUMAN_PX = 2.7  # a careful labeller on these frames (issue 22)
DLC_RANDOM_INIT = (30.0, 92.0)  # DeepLabCut 3.0.2 from random init: (CPU-minutes, test px)


def _test_all(record: dict) -> dict:
    return next(r for r in record["errors"] if r["set"] == "test" and r["bodypart"] == "all")


def label(record: dict) -> str:
    """What distinguishes a run, seed and CPU aside: the recipe, epochs, crop sampling,
    inverted images and pseudo-labels."""
    resolved = record["resolved"]
    budget = record.get("settings", {}).get("budget_minutes")
    # A budget's epochs follow the machine's pace: its runs are one setting, not one each.
    steps = f"--budget {budget:g} min" if budget else f"{resolved['epochs']} epochs"
    name = f"{resolved.get('recipe', 'custom')} recipe, {steps}"
    name += f", {resolved.get('crop_sampling', 'centred')} crops"
    invert = resolved.get("augment", {}).get("invert_prob", 0.0)
    if invert:
        name += f", invert {invert:g}"
    pseudo = resolved.get("pseudo_labels", {})
    if pseudo.get("enabled"):
        name += f", pseudo-labels (pcutoff {pseudo['pcutoff']})"
    return name


def simd(machine: dict) -> str:
    """The widest vector extension a record's run computed with: runs differ between AVX2
    and AVX-512. A run held to AVX2 (``isa_limits``) counts as AVX2."""
    if machine.get("isa_limits", {}).get("ONEDNN_MAX_CPU_ISA", "").upper() == "AVX2":
        return "AVX2"
    flags = set(machine.get("cpu_flags", []))
    return "AMX" if "amx_tile" in flags else "AVX-512" if "avx512f" in flags else "AVX2"


def summarise(records: list[dict]) -> dict:
    """Per run and per label (over seeds) the final test error; every run's curve."""
    runs = []
    for rec in records:
        test = _test_all(rec)
        runs.append({"label": label(rec), "seed": rec["resolved"]["seed"],
                     "cpu": f"{rec['machine'].get('cpu')} {simd(rec['machine'])}",
                     "simd": simd(rec["machine"]),
                     "isa_limits": rec["machine"].get("isa_limits", {}),
                     "train_cpu_minutes": rec["train_cpu_minutes"],
                     "test_mean_px": round(test["error_px"], 3),
                     "test_median_px": round(test["median_px"], 3),
                     # Against labels with posed check-labels' flagged pairs swapped back
                     # (records from before the check have none).
                     "test_mean_px_labels_swapped_back":
                         rec.get("labels_swapped_back", {}).get("test_error_px"),
                     "pck": {k: test[k] for k in test if k.startswith("pck@")},
                     "curve": rec["curve"]})
    labels = {}
    for name in dict.fromkeys(r["label"] for r in runs):
        finals = [r["test_mean_px"] for r in runs if r["label"] == name]
        labels[name] = {"seeds": [r["seed"] for r in runs if r["label"] == name],
                        "cpus": [r["cpu"] for r in runs if r["label"] == name],
                        "test_mean_px": round(statistics.fmean(finals), 3),
                        "test_mean_px_sd": round(statistics.stdev(finals), 3)
                        if len(finals) > 1 else None,
                        "test_mean_px_range": [min(finals), max(finals)]}
    return {"runs": runs, "labels": labels}


def plot(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {name: cycle[i % len(cycle)] for i, name in enumerate(summary["labels"])}
    for run in summary["runs"]:
        xs = [p["cpu_minutes"] for p in run["curve"]]
        ys = [p["test_error_px"] for p in run["curve"]]
        ax.plot(xs, ys, marker="o", ms=3, lw=1.2, color=colours[run["label"]],
                ls={"AVX2": "--", "AMX": ":"}.get(run["simd"], "-"),
                label=f"{run['label']}, seed {run['seed']}, {run['cpu']}")
    ax.axhline(HUMAN_PX, color="k", ls="--", lw=1, label=f"human labeller ({HUMAN_PX} px)")
    ax.plot(*DLC_RANDOM_INIT, "kx", ms=8, label="DeepLabCut 3.0.2, random init")
    ax.set_yscale("log")
    ax.set_xlabel("training CPU-minutes (process CPU time; 2-core machines, most runs one thread)")
    ax.set_ylabel("mean test error (px, 5 test frames)")
    ax.set_title("posed on openfield: mobilenet_v2_0.35 from random init")
    ax.grid(True, which="both", alpha=0.3)
    # below the axes: inside, it would hide the curves' start or DeepLabCut's point
    ax.legend(fontsize=6.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.95, bottom=0.4)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("records", nargs="+", type=Path, help="train_openfield.py JSON records")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "train_openfield_seeds.json")
    ap.add_argument("--plot", type=Path, default=HERE / "results" / "train_openfield_curve.png")
    args = ap.parse_args()
    records = []
    for path in args.records:
        try:
            rec = json.loads(path.read_text())
            if rec.get("benchmark") != "train_openfield":
                raise ValueError("not a train_openfield.py record")
        except (OSError, ValueError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            return 1
        records.append(rec)
    summary = {"benchmark": "openfield_curve", "machine": machine_info(),
               "records": [str(p) for p in args.records], **summarise(records)}
    plot(summary, args.plot)  # first: a plot that fails leaves the old summary and plot
    atomic_write_text(args.out, json.dumps(summary, indent=2) + "\n")
    for name, agg in summary["labels"].items():
        print(f"{name}: test mean {agg['test_mean_px']} px (sd {agg['test_mean_px_sd']}, "
              f"range {agg['test_mean_px_range']}) over seeds {agg['seeds']} on {agg['cpus']}")
    print(f"written {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
