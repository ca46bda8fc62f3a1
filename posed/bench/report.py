"""A bench record as a short Markdown table: one renderer per case."""

from __future__ import annotations

from typing import Any, Callable

Row = Callable[..., None]


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _cameras(r: dict[str, Any]) -> str:
    return f"{r['cameras']} camera(s){', batching' if r['dynamic_batching'] else ''}"


def _per_camera(r: dict[str, Any]) -> str:
    return ", ".join(f"{v:g}" for v in r["per_camera"].values())


def _engine(row: Row, res: dict[str, Any]) -> None:
    for r in res["rows"]:
        what = f"{r['model']} {r['runtime']}" if "model" in r else r["runtime"]
        if "error" in r:
            row(what, None, None, r["error"])
        else:
            row(f"{what} batch {r['batch']}", r["frames_per_s"], r, "frames/s")


def _multicam(row: Row, res: dict[str, Any]) -> None:
    for r in res["rows"]:
        row(_cameras(r), r["frames_per_s"], None,
            f"{r['frames']}/{r['expected']} frames; per camera " + _per_camera(r))


def _gpu(row: Row, res: dict[str, Any]) -> None:
    for r in res["rows"]:
        row(f"{r['model']} {r['mode']} batch {r['batch']}", r["frames_per_s"], r, res["device"])
    for what, acc in res.get("accuracy", {}).items():
        row(what, None, None, f"max {acc['max_px']} px, likelihood {acc['max_likelihood']}")
    d = res["daemon"]
    row(f"daemon {d['model']} {d['fps']} fps", None, d["capture_to_publish"],
        f"capture→publish, {d['frames']}/{d['expected']} frames")
    for r in res["cameras"]:
        row(_cameras(r), r["frames_per_s"], None, "per camera " + _per_camera(r))


def _decode(row: Row, res: dict[str, Any]) -> None:
    for r in res["rows"]:
        row(f"threads {'on' if r['threads'] else 'off'}", r["frames_per_s"], None, "frames/s")


def _pipeline(row: Row, res: dict[str, Any]) -> None:
    raw = res["engine"]
    row(f"raw {raw['runtime']} batch 1", raw["frames_per_s"], raw,
        "frames/s" + (f" (main thread {_fmt(raw['main_thread_frames_per_s'])}, worker thread "
                      f"{_fmt(raw['worker_thread_frames_per_s'])})"
                      if "main_thread_frames_per_s" in raw else ""))
    row("daemon, fast file", res["fast"].get("frames_per_s"), None,
        f"ratio to engine {_fmt(res['fps_ratio'])}")
    nat = res["native"]
    row("capture→publish", None, nat["capture_to_publish"],
        f"native pace {nat['rate']} fps, {nat['frames']} frames")
    row("added latency", None, nat["added"], "capture→publish minus inference")


def _publisher(row: Row, res: dict[str, Any]) -> None:
    row(res["endpoint"], res["messages_per_s"], res["latency"],
        f"messages/s, {res['received']}/{res['sent']} received")


def _resources(row: Row, res: dict[str, Any]) -> None:
    for r in res["rows"]:
        note = r.get("error") or (f"ready {_fmt(r['ready_s'])} s "
                                  f"({_fmt(r['ready_s_with_imports'])} s with imports), "
                                  f"peak RSS {_fmt(r['peak_rss_mb'])} MB")
        row(r["engine"], None, None, note)


def _matmul(row: Row, res: dict[str, Any]) -> None:
    for name, g in res["matmul_gflops"].items():
        row(f"{name} matmul {res['matmul_n']}", g, None, "GFLOP/s")
    # Records written before per-model rows existed carry the model's figures at the top.
    for r in res.get("models") or [{"model": "model", "gflops": res["model_gflops"],
                                     "gflop_per_frame": res["model_gflop_per_frame"],
                                     "fraction_of_peak": res["fraction_of_peak"]}]:
        row(f"{r['model']} {r.get('runtime', '')}".strip(), r["gflops"], None,
            f"GFLOP/s ({r['gflop_per_frame']} GFLOP/frame); {_fmt(r['fraction_of_peak'])} of peak")


def _families(row: Row, res: dict[str, Any]) -> None:
    for r in res["rows"]:
        if "export_refused" in r:
            row(f"{r['family']} {r['runtime']}", None, r,
                f"not timed: export refused ({r['export_refused'][:120]})")
            continue
        if "crop_batch" in r:
            kind = (f"top-down: detector + pose model on {_fmt(r['animals_per_frame'])} crops "
                    f"per frame (crop batch {r['crop_batch']})")
        elif r["multianimal"]:
            kind = (f"multi-animal, DeepLabCut's assembly ({_fmt(r['animals_per_frame'])} "
                    "animals per frame)")
        else:
            kind = "single-animal"
        row(f"{r['family']} {r['runtime']}", r["frames_per_s"], r,
            f"frames/s, batch 1, {kind}, stride {_fmt(r['stride'])}")


_RENDER: dict[str, Callable[[Row, dict[str, Any]], None]] = {
    "families": _families, "engine": _engine, "multicam": _multicam, "gpu": _gpu, "decode": _decode,
    "pipeline": _pipeline, "publisher": _publisher, "resources": _resources, "matmul": _matmul,
}


def to_markdown(record: dict[str, Any]) -> str:
    """A Markdown table (case, what, frames/s or rate, p50/p95/p99 ms, note) of a record."""
    m = record.get("machine", {})
    cfg = record.get("config", {})
    lines = [f"posed bench, {record.get('date', '?')}: {m.get('cpu', '?')}, "
             f"{m.get('usable_cores', m.get('cores', '?'))} cores; size {cfg.get('size')}, "
             f"{cfg.get('seconds')} s per measurement", "",
             "| case | what | per s | p50 ms | p95 ms | p99 ms | note |",
             "|---|---|---|---|---|---|---|"]
    for case, res in record.get("results", {}).items():
        def row(what: str, rate: Any, pct: dict | None = None, note: str = "",
                case: str = case) -> None:
            pct = pct or {}
            lines.append(f"| {case} | {what} | {_fmt(rate)} | {_fmt(pct.get('p50_ms'))} | "
                         f"{_fmt(pct.get('p95_ms'))} | {_fmt(pct.get('p99_ms'))} | {note} |")

        if case in ("multicam", "gpu") and "skipped" in res:
            row("skipped", None, None, res["skipped"])
        elif case in _RENDER:
            _RENDER[case](row, res)
    return "\n".join(lines) + "\n"
