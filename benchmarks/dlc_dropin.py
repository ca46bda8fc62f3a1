"""Proof that posed is a DeepLabCut drop-in, against DeepLabCut 3.0.2 itself.

    python benchmarks/dlc_dropin.py [--dlc-env /work/dlcenv] [--workdir /tmp/posed-dlc-dropin]
                                    [--out benchmarks/results/dlc_dropin.json]

Run with posed's python. DeepLabCut pins numpy<2, so it lives in its own environment, built
here when ``--dlc-env`` does not exist yet (``python3.11 -m venv`` + pip, about 10 minutes).
Steps, each recorded (ok, seconds, what it printed last) in the JSON:

1. DeepLabCut trains a shuffle (``dlc_reference/make_shuffle_fixture.py``: a ``posed synth``
   project, DeepLabCut's create_training_dataset, 2 epochs from random init).
2. A DeepLabCut user's script (``dlc_reference/user_script.py``, ``import deeplabcut``) runs
   unchanged against posed's compat layer on that shuffle: ``deeplabcut`` is
   ``posed.engines.compat`` in that process.
3. DeepLabCut's filterpredictions, plot_trajectories, analyzeskeleton and create_labeled_video
   run on the folder posed wrote (``dlc_reference/downstream.py``).
4. The round trip: posed trains a shuffle through DeepLabCut's calls in DeepLabCut's layout;
   DeepLabCut's analyze_videos and evaluate_network and DeepLabCut-Live run on it and agree
   with posed within 1e-3 px (``dlc_reference/roundtrip_check.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REF = HERE / "dlc_reference"
DLC_PINS = ["deeplabcut==3.0.2", "numpy<2", "torch==2.14.1", "torchvision==0.29.1",
            "deeplabcut-live"]
SHIM = ("import runpy, sys; import posed.engines.compat as c; sys.modules['deeplabcut'] = c; "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
ROUND_TRIP = """
import sys
import posed.engines.compat as deeplabcut
cfg, out = sys.argv[1], sys.argv[2]
deeplabcut.create_training_dataset(cfg, Shuffles=[1], net_type="resnet_50")
deeplabcut.train_network(cfg, shuffle=1, epochs=2, save_epochs=1, batch_size=4)
print("SCORER=" + deeplabcut.analyze_videos(cfg, [cfg.rsplit("/", 1)[0] + "/videos"],
                                            destfolder=out))
deeplabcut.export_model(cfg, shuffle=1)
"""


def run(name: str, argv: list[str], record: dict, cwd: Path | None = None) -> str:
    """Run one step; its outcome goes to ``record[name]``; returns its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-6:]
    record[name] = {"ok": proc.returncode == 0, "seconds": round(time.perf_counter() - t0, 1),
                    "tail": tail}
    print(f"{name}: {'ok' if proc.returncode == 0 else 'FAILED'} "
          f"({record[name]['seconds']} s)", flush=True)
    if proc.returncode != 0:
        print("\n".join(tail), file=sys.stderr)
    return proc.stdout


def dlc_python(env: Path, record: dict) -> Path:
    """The DeepLabCut environment's python, built first when missing."""
    py = env / "bin" / "python"
    if not py.exists():
        run("build_dlc_env", [shutil.which("python3.11") or sys.executable, "-m", "venv",
                              str(env)], record)
        run("install_dlc", [str(py), "-m", "pip", "install", "-q", *DLC_PINS], record)
    return py


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dlc-env", type=Path, default=Path("/work/dlcenv"))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/posed-dlc-dropin"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "dlc_dropin.json")
    args = ap.parse_args()
    posed_py = Path(sys.executable)
    posed_bin = posed_py.with_name("posed")
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    steps: dict = {}
    dlc = dlc_python(args.dlc_env, steps)

    run("1_deeplabcut_trains_a_shuffle", [str(dlc), str(REF / "make_shuffle_fixture.py"),
        "--posed", str(posed_bin), "--out", str(work / "fixture"),
        "--workdir", str(work / "fixture-build")], steps)
    project = work / "fixture-build" / "synth"
    out = run("2_user_script_on_posed", [str(posed_py), "-c", SHIM, str(REF / "user_script.py"),
              str(project / "config.yaml"), str(project / "videos"), str(work / "posed-out")],
              steps)
    steps["2_user_script_on_posed"]["printed"] = [ln for ln in out.splitlines() if "=" in ln]
    video = project / "videos" / "synth1.mp4"
    run("3_deeplabcut_tools_on_posed_output", [str(dlc), str(REF / "downstream.py"),
        str(project / "config.yaml"), str(video), str(work / "posed-out"),
        "--out", str(work / "downstream.json")], steps)

    rt = work / "rt"
    run("4a_posed_synth", [str(posed_bin), "synth", str(rt), "--frames", "20", "--video-frames",
                           "12", "--size", "64x64", "--seed", "5", "-q"], steps)
    out = run("4b_round_trip_posed_side", [str(posed_py), "-c", ROUND_TRIP,
              str(rt / "config.yaml"), str(rt / "posed-out")], steps)
    scorer = next((ln.split("=", 1)[1] for ln in out.splitlines() if ln.startswith("SCORER=")), "")
    exported = next((rt / "exported-models-pytorch").rglob("*.pt"), None)
    run("4c_round_trip_deeplabcut_side", [str(dlc), str(REF / "roundtrip_check.py"),
        str(rt / "config.yaml"), str(rt / "posed-out" / f"synth1{scorer}.h5"), str(exported),
        "--out", str(work / "roundtrip.json")], steps)

    for name, file in (("3_deeplabcut_tools_on_posed_output", "downstream.json"),
                       ("4c_round_trip_deeplabcut_side", "roundtrip.json")):
        if (work / file).is_file():
            steps[name]["detail"] = json.loads((work / file).read_text())["steps"]
    record = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": platform.machine(), "python": platform.python_version(),
              "deeplabcut_env": DLC_PINS, "steps": steps,
              "all_ok": all(s["ok"] for s in steps.values())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{'all steps passed' if record['all_ok'] else 'SOME STEPS FAILED'}: {args.out}")
    return 0 if record["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
