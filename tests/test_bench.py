"""``posed bench``: case listing, errors, two quick cases and the Markdown table.

Figures are checked for structure and sign only: timing thresholds would fail on a busy
machine without saying anything about the code.
"""

from __future__ import annotations

import json

import numpy as np

from posed import bench
from posed.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_case(capsys):
    code, out, _ = run(capsys, "bench", "--list")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == list(bench.CASES)
    assert {"engine", "decode", "pipeline", "publisher", "resources", "matmul"} <= set(names)


def test_unknown_case_is_a_one_line_error(capsys):
    code, out, err = run(capsys, "bench", "--case", "decode", "--case", "warp-drive", "-q")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "warp-drive" in err and "publisher" in err and "Traceback" not in err


def test_decode_and_publisher_cases(tmp_path, capsys):
    out_file = tmp_path / "res" / "bench.json"
    out_file.parent.mkdir()
    code, out, _ = run(capsys, "bench", "--case", "decode", "--case", "publisher",
                       "--seconds", "0.5", "--out", str(out_file), "-q")
    assert code == 0
    record = json.loads(out_file.read_text())
    assert {"date", "machine", "config", "results"} <= set(record)
    assert record["machine"]["cores"] >= 1 and record["machine"]["versions"]["numpy"]
    assert record["config"]["seconds"] == 0.5 and record["config"]["size"] == [320, 240]
    assert list(record["results"]) == ["decode", "publisher"]

    decode = record["results"]["decode"]["rows"]
    assert [r["threads"] for r in decode] == [True, False]
    for r in decode:
        assert r["frames"] >= 300 and r["frames_per_s"] > 0  # at least one pass of the clip

    pub = record["results"]["publisher"]
    assert pub["received"] == pub["sent"] > 0 and pub["messages_per_s"] > 0
    assert pub["latency_samples"] >= 20
    assert 0 < pub["latency"]["p50_ms"] <= pub["latency"]["p95_ms"] <= pub["latency"]["p99_ms"]

    md = out_file.with_suffix(".md").read_text()
    assert md == out  # the printed table is the one written beside the JSON
    assert "| decode | threads on |" in md and "| publisher | tcp loopback |" in md


def test_to_markdown_renders_a_table():
    record = {
        "date": "2026-01-01T00:00:00+00:00",
        "machine": {"cpu": "Test CPU", "cores": 2},
        "config": {"size": [320, 240], "seconds": 1.0},
        "results": {
            "engine": {"rows": [{"runtime": "onnx-fp32", "batch": 1, "frames_per_s": 100.0,
                                 "p50_ms": 9.5, "p95_ms": 10.0, "p99_ms": 12.0}]},
            "pipeline": {"engine": {"runtime": "onnx", "frames_per_s": 50.0, "p50_ms": 20.0,
                                    "p95_ms": 21.0, "p99_ms": 22.0},
                         "fast": {"frames": 100, "frames_per_s": 48.0}, "fps_ratio": 0.96,
                         "native": {"rate": 25, "frames": 75,
                                    "capture_to_publish": {"p50_ms": 21.0},
                                    "inference": {"p50_ms": 20.0}, "added": {"p50_ms": 0.8}}},
            "resources": {"rows": [{"engine": "onnx", "ready_s": 0.2, "ready_s_with_imports": 0.5,
                                    "peak_rss_mb": 150.0}, {"engine": "pytorch", "error": "boom"}]},
            "matmul": {"matmul_n": 1024, "matmul_gflops": {"numpy": 60.0}, "model_gflops": 3.0,
                       "model_gflop_per_frame": 0.5, "fraction_of_peak": 0.05},
        },
    }
    md = bench.to_markdown(record)
    lines = md.strip().splitlines()
    assert "Test CPU" in lines[0]
    table = [line for line in lines if line.startswith("|")]
    assert table[0].startswith("| case | what |") and set(table[1]) <= set("|-")
    assert all(line.count("|") == table[0].count("|") for line in table)
    assert "| engine | onnx-fp32 batch 1 | 100 | 9.5 | 10 | 12 | frames/s |" in md
    assert "| pipeline | raw onnx batch 1 | 50 |" in md and "ratio to engine 0.96" in md
    assert "| added latency | – | 0.8 |" in md
    assert "peak RSS 150 MB" in md and "boom" in md and "0.05 of peak" in md


def test_multicam_delivers_every_frame_of_every_camera_and_gpu_skips_without_cuda(tmp_path, capsys):
    out_file = tmp_path / "b.json"
    code, out, _ = run(capsys, "bench", "--case", "multicam", "--case", "gpu", "--seconds", "0.5",
                       "--out", str(out_file), "-q")
    assert code == 0
    res = json.loads(out_file.read_text())["results"]
    rows = res["multicam"]["rows"]
    assert [(r["cameras"], r["dynamic_batching"]) for r in rows] == [
        (1, False), (2, False), (2, True), (4, False), (4, True)]
    for r in rows:  # lossless file sources: nothing may go missing, every camera served
        assert r["frames"] == r["expected"] and len(r["per_camera"]) == r["cameras"]
        assert r["frames_per_s"] > 0
    import torch

    if not torch.cuda.is_available():
        assert "no CUDA" in res["gpu"]["skipped"] and "| gpu | skipped |" in out
    assert "| multicam | 4 camera(s), batching |" in out


def test_gpu_case_procedure_runs_end_to_end_on_the_cpu():
    """The GPU case's procedure, on the CPU with tiny sizes: a GPU session has minutes only."""
    modes = {"fp32": {"precision": "fp32", "cuda_graphs": False},
             "fp32-nhwc": {"precision": "fp32", "channels_last": True}}
    res = bench.gpu_figures(bench.BenchOptions(seconds=0.2, nets=("mobilenet_v2_0.35",)), "cpu",
                            modes, size=(96, 64), batches=(1, 2), daemon_frames=40, daemon_fps=50,
                            cameras=(1, 2), per_camera=20)
    assert [(r["mode"], r["batch"]) for r in res["rows"]] == [
        ("fp32", 1), ("fp32", 2), ("fp32-nhwc", 1), ("fp32-nhwc", 2)]
    assert res["accuracy"]["fp32-nhwc vs fp32"]["max_px"] < 0.01
    assert res["daemon"]["frames"] == res["daemon"]["expected"] == 40
    assert res["daemon"]["capture_to_publish"]["p50_ms"] > 0
    assert [(r["cameras"], r["frames"]) for r in res["cameras"]] == [(1, 20), (2, 40), (2, 40)]
    md = bench.to_markdown({"results": {"gpu": {"device": "cpu", **res}}})
    assert "| gpu | daemon mobilenet_v2_0.35 50 fps |" in md


def test_without_the_source_tree_stand_ins_replace_the_demo_model_and_clip(tmp_path, monkeypatch):
    """An installed wheel has no configs/demo: the bench times a randomly initialised bundle
    of the demo's architecture on a synthetic clip of the demo's size, and says so."""
    import pytest

    pytest.importorskip("torch")
    from posed.bench import assets
    from posed.engines import api
    from posed.engines.video import probe_video

    missing = tmp_path / "no-source-tree"
    monkeypatch.setattr(assets, "DEMO_MODEL", missing / "model")
    monkeypatch.setattr(assets, "DEMO_CLIP", missing / "clip.mp4")
    for cached in (assets.demo_model, assets.demo_clip, assets._scratch):
        cached.cache_clear()
    monkeypatch.setattr(assets, "_scratch", lambda: tmp_path)
    try:
        model = assets.demo_model()
        assert model.parent == tmp_path and not assets.has_demo_model()
        runner = api.load_model(model)
        poses = runner.predict(np.zeros((2, 128, 128, 3), np.uint8))
        assert poses.shape == (2, 4, 3) and np.isfinite(poses).all()
        assert assets.model_label(assets.BenchOptions()) == "random mobilenet_v2_0.35"

        clip = assets.demo_clip()
        info = probe_video(clip)
        assert (info.width, info.height) == (128, 128) and info.nframes == 300
        frames = assets.frames((64, 48), 5)
        assert frames.shape == (5, 48, 64, 3) and frames.std() > 0  # not a blank picture
    finally:
        for cached in (assets.demo_model, assets.demo_clip):
            cached.cache_clear()


def test_flatness_tells_a_slow_second_from_single_hiccups():
    # A machine that slows down for a while: one run of slow calls, p99 inside it.
    steady = [10.0] * 95
    episode = steady[:50] + [16.0] * 5 + steady[50:]
    f = bench.flatness(episode)
    assert f["slow_episodes"] == 1 and f["slow_share"] == round(5 / 100, 4)
    assert f["p99_over_p50"] == 1.6
    # The same slow calls spread out: five episodes; calls at exactly 1.5x are not slow.
    spread = [16.0 if i % 20 == 19 else 10.0 for i in range(100)] + [15.0]
    f = bench.flatness(spread)
    assert f["slow_episodes"] == 5 and f["slow_share"] == round(5 / 101, 4)
    assert bench.flatness([10.0] * 50)["p99_over_p50"] == 1.0
    empty = bench.flatness([])
    assert empty["slow_episodes"] == 0 and np.isnan(empty["p99_over_p50"])


def test_measure_reports_flatness_and_calls_in_order():
    seen = []

    class Runner:
        def predict(self, batch):
            seen.append(int(batch[0, 0, 0, 0]))

    frames = np.arange(4, dtype=np.uint8)[:, None, None, None].repeat(3, axis=3)
    out = bench.measure(Runner(), frames, 1, 0.0)
    assert out["calls"] == 5 and len(seen) == 7  # two warm-up calls, then at least 5
    assert seen == [0, 1, 0, 1, 2, 3, 0]
    assert {"p50_ms", "p99_ms", "p99_over_p50", "slow_share", "slow_episodes"} <= out.keys()
    lat = bench.time_calls(lambda i: seen.append(i), 0.0, min_calls=3)
    assert len(lat) == 3 and seen[-3:] == [0, 1, 2] and min(lat) >= 0


def test_machine_records_instruction_set_limits(monkeypatch):
    # A result computed as an AVX2-only CPU would (make test-avx2) must not read as native.
    for name in bench.AVX2_LIMITS:
        monkeypatch.delenv(name, raising=False)
    assert bench.machine_info()["isa_limits"] == {}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "")
    assert bench.machine_info()["isa_limits"] == {"ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_paired_flatness_times_runtime_and_constant_work_in_turns(monkeypatch):
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    sys.modules.pop("_compute", None)
    import _compute

    order = []

    class Runner:
        def predict(self, batch):
            assert batch.shape == (1, 2, 2, 3)
            order.append("r")

    def work(i):
        order.append("w")

    monkeypatch.setattr(_compute, "constant_work", lambda ms: (work, "stand-in"))
    frames = np.zeros((3, 2, 2, 3), np.uint8)
    out = _compute.paired_flatness(Runner(), frames, seconds=0.0, calls=4)
    assert out["runtime"]["calls"] == out["constant_work"]["calls"] == 4
    assert out["constant_work"]["workload"] == "stand-in" and out["round_calls"] == 4
    # Warm-up and sizing calls first, then one round each: runtime, then constant work.
    assert order[-9:] == ["w"] + ["r"] * 4 + ["w"] * 4
    assert {"p99_over_p50", "slow_share", "slow_episodes"} <= out["runtime"].keys()
