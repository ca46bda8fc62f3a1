"""``precision: auto``: the fastest runtime and precision on this CPU that keeps the keypoints.

Which runtime and precision is fastest depends on the CPU (VNNI or not, AMX, bf16, the
cache) and on the model (GroupNorm or BatchNorm, its size), so posed measures instead of
guessing. :func:`export_auto` (``posed export --precision auto``) exports every candidate
variant of a model to ONNX (fp32; static INT8; with frozen normalisation, fp32 and INT8, for
PyTorch GroupNorm models), runs each under every runtime installed here (ONNX Runtime;
OpenVINO fp32 and, where the CPU has native bf16, bf16), and keeps the fastest whose
keypoints stay within :data:`CRITERION` of the native model on held-out frames. The
candidates take turns of a few calls each, so drift of the machine's speed falls on all of
them alike, and the first call of each turn is not timed: a camera's stream never switches
runtimes. Every measurement goes to ``export.auto`` in the bundle's ``posed.yaml``.

At load time :func:`auto_runtime` turns that record into the engine and precision to run
(an engine or precision the user names wins), and says in the log when this CPU is not the
one the choice was measured on.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posed.engines.bundle import ModelBundle, load_bundle
from posed.engines.cpu import cpu_id, cpu_model, native_bf16, simd_flags
from posed.engines.parity import compare_poses
from posed.engines.registry import Engine, capability, engine_available
from posed.errors import ConfigError, ExportError, ExportMismatchError, PosedError

log = logging.getLogger(__name__)

__all__ = ["CRITERION", "Candidate", "auto_runtime", "choose", "export_auto"]

# The bound of the CPU-latency work: median distance (px) of the keypoints the native model
# sees (likelihood >= 0.5), and the largest likelihood difference.
CRITERION = {"median_px_confident": 0.5, "max_likelihood": 0.15}
# An approximation must beat the fastest exact candidate by this share, else the exact one is
# kept: a few per cent is within the run-to-run noise of a 2-core machine.
EXACT_MARGIN = 0.05
ROUNDS = 15  # timed calls per candidate, after WARMUP
WARMUP = 2
TURN = 3  # timed calls in a row per candidate, after one untimed call
VARIANTS = {  # name -> export options
    "fp32": {},
    "int8": {"precision": "int8"},
    "fp32+frozen-norm": {"freeze_norm": True},
    "int8+frozen-norm": {"precision": "int8", "freeze_norm": True},
}
RUNTIMES = (("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"))


@dataclass
class Candidate:
    """One variant under one runtime, and what was measured of it."""

    variant: str
    engine: str
    precision: str
    status: str = "measured"  # measured, chosen, refused (beyond the criterion), skipped
    reason: str = ""
    parity: dict[str, float] = field(default_factory=dict)
    times_ms: list[float] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.variant == "fp32" and self.precision == "fp32"

    @property
    def p50_ms(self) -> float:
        return float(np.median(self.times_ms)) if self.times_ms else float("inf")

    def passes(self) -> bool:
        return bool(self.parity) and all(self.parity[k] <= v for k, v in CRITERION.items())

    def record(self) -> dict[str, Any]:
        """The candidate's line in ``export.auto.candidates``."""
        row: dict[str, Any] = {"variant": self.variant, "engine": self.engine,
                               "precision": self.precision, "status": self.status}
        if self.reason:
            row["reason"] = self.reason
        if self.times_ms:
            t = np.asarray(self.times_ms)
            row.update(p50_ms=round(float(np.median(t)), 2),
                       p90_ms=round(float(np.percentile(t, 90)), 2),
                       max_ms=round(float(t.max()), 2))
        for key in ("median_px_confident", "max_px_confident", "max_likelihood"):
            if key in self.parity:
                row[key] = round(self.parity[key], 4)
        return row


def choose(candidates: list[Candidate]) -> Candidate:
    """The fastest candidate within :data:`CRITERION`; an exact one within
    :data:`EXACT_MARGIN` of it is preferred. Marks the statuses.

    Raises:
        ExportError: no candidate was measured within the criterion.
    """
    timed = [c for c in candidates if c.status == "measured" and c.times_ms]
    for c in timed:
        if not c.passes():
            c.status = "refused"
            c.reason = (f"median {c.parity['median_px_confident']:.3g} px, likelihood "
                        f"{c.parity['max_likelihood']:.3g} (bound "
                        f"{CRITERION['median_px_confident']} px, "
                        f"{CRITERION['max_likelihood']})")
    good = sorted((c for c in timed if c.status == "measured"), key=lambda c: c.p50_ms)
    if not good:
        raise ExportError("precision auto: no candidate kept the keypoints within "
                          f"{CRITERION['median_px_confident']} px median (see the log)")
    best = good[0]
    exact = [c for c in good if c.exact]
    if exact and exact[0].p50_ms <= best.p50_ms * (1 + EXACT_MARGIN):
        best = exact[0]
    best.status = "chosen"
    return best


def export_auto(bundle: ModelBundle, out: Path, *, check_frames: np.ndarray,
                calibration: np.ndarray | None = None,
                calibration_info: dict[str, Any] | None = None, overwrite: bool = False,
                rounds: int = ROUNDS, **options: Any) -> Path:
    """Export ``bundle`` to ONNX at ``out`` in the variant and runtime fastest on this CPU.

    Args:
        bundle: A trained model in its native engine's format (PyTorch, TensorFlow).
        out: The bundle folder to create.
        check_frames: Frames of the camera, never calibrated on: parity and timing run on them.
        calibration: Frames for static INT8 and frozen normalisation; without them only fp32
            candidates are tried.
        calibration_info: Where the calibration frames came from (recorded).
        overwrite: Replace ``out``.
        rounds: Timed calls per candidate.
        options: Further ONNX export options (``opset``, ``fixed_size``, ``simplify``).

    Raises:
        ExportError: ``out`` exists without ``overwrite``, or nothing kept the keypoints.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists (pass --overwrite to replace it)")
    reference = _native_poses(bundle, check_frames)
    parent = out.parent if out.parent.exists() else None
    with tempfile.TemporaryDirectory(dir=parent) as tmp:
        exports, candidates = _export_variants(bundle, Path(tmp), check_frames, calibration,
                                               calibration_info, options)
        runners = _load_runners(exports, candidates)
        try:
            for c, runner in runners:
                c.parity = compare_poses(reference, runner.predict(check_frames))
            _time_interleaved(runners, check_frames, rounds)
        finally:
            for _, runner in runners:
                runner.close()
        best = choose(candidates)
        chosen = load_bundle(exports[best.variant])
        chosen.export["auto"] = _record(best, candidates, check_frames, rounds)
        chosen.save(exports[best.variant], [w["name"] for w in chosen.weights])
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(exports[best.variant]), str(out))
    log.info("%s", summary(chosen.export["auto"]))
    return out


def summary(record: dict[str, Any]) -> str:
    """One line from ``export.auto``: what was chosen, against fp32 on ONNX Runtime."""
    rows = record["candidates"]
    chosen = record["chosen"]
    best = next(r for r in rows if r["status"] == "chosen")
    base = next((r for r in rows if r["variant"] == "fp32" and r["engine"] == "onnx"
                 and "p50_ms" in r), None)
    than = f" ({base['p50_ms'] / best['p50_ms']:.2f}x onnx fp32)" \
        if base is not None and base is not best else ""
    timed = sum(1 for r in rows if "p50_ms" in r)
    return (f"precision auto: {chosen['variant']} on {chosen['engine']} {chosen['precision']}, "
            f"p50 {best['p50_ms']:.1f} ms{than}, median {best['median_px_confident']:.2g} px "
            f"from the native model; {timed} of {len(rows)} candidates timed on "
            f"{record['machine']['cpu']}")


def _native_poses(bundle: ModelBundle, frames: np.ndarray) -> np.ndarray:
    # The runner is made here, not by loading.load_model, which follows export.auto.
    with capability(Engine.parse(bundle.engine), "load_runner")(bundle) as runner:
        if getattr(runner, "multianimal", False):
            raise ConfigError(f"{bundle.path}: precision auto is for single-animal models "
                              "(multi-animal assembly is judged otherwise; export with --int8)")
        return runner.predict(frames)


def _export_variants(bundle: ModelBundle, tmp: Path, check: np.ndarray,
                     calibration: np.ndarray | None, calibration_info: dict[str, Any] | None,
                     options: dict[str, Any]) -> tuple[dict[str, Path], list[Candidate]]:
    """Each variant exported under ``tmp``; a variant that cannot be made is skipped."""
    export: Callable[..., Path] = capability(Engine.parse(bundle.engine), "export")
    exports: dict[str, Path] = {}
    candidates: list[Candidate] = []
    for name, extra in VARIANTS.items():
        rows = [Candidate(name, eng, prec) for eng, prec in RUNTIMES]
        candidates += rows
        status, reason = "skipped", _cannot(bundle, extra, calibration)
        if not reason:
            calib = {"calibration": calibration, "calibration_info": calibration_info} \
                if extra else {}
            try:
                exports[name] = export(bundle, "onnx", tmp / name, check_frames=check,
                                       approximate=bool(extra), **calib, **extra, **options)
                continue
            except ExportMismatchError as exc:  # beyond the bound already in ONNX Runtime
                status, reason = "refused", str(exc).replace(str(tmp / name) + ": ", "")
            except PosedError as exc:  # e.g. no GroupNorm layer to freeze
                reason = str(exc)
        for c in rows:
            c.status, c.reason = status, reason
    return exports, candidates


def _cannot(bundle: ModelBundle, extra: dict[str, Any], calibration: Any) -> str:
    """Why a variant cannot be exported from this bundle, or ''."""
    if extra and calibration is None:
        return "no calibration frames"
    if extra.get("freeze_norm") and bundle.engine != "pytorch":
        return f"frozen normalisation applies to PyTorch models (this one is {bundle.engine})"
    return ""


def _load_runners(exports: dict[str, Path], candidates: list[Candidate]) -> list[tuple]:
    """A runner per candidate whose variant exists; a runtime this machine lacks is skipped."""
    runners = []
    for c in candidates:
        if c.variant not in exports:
            continue
        reason = _runtime_missing(c.engine, c.precision)
        if not reason:
            options = {"precision": c.precision} if c.engine == "openvino" else {"provider": "cpu"}
            try:
                load = capability(Engine.parse(c.engine), "load_runner")
                runners.append((c, load(load_bundle(exports[c.variant]), **options)))
                continue
            except PosedError as exc:
                reason = str(exc)
        c.status, c.reason = "skipped", reason
    return runners


NO_BF16 = "this CPU has no native bf16 (amx_bf16 or avx512_bf16)"


def _runtime_missing(engine: str, precision: str) -> str:
    if not engine_available(Engine.parse(engine)):
        return f"{engine} is not installed (pip install 'posed[{engine}]')"
    if precision == "bf16" and native_bf16() is None:
        return NO_BF16
    return ""


def _time_interleaved(runners: list[tuple], frames: np.ndarray, rounds: int) -> None:
    """Batch-1 latency of every runner over ``rounds`` calls, taken in turns.

    Each turn is one untimed call and then up to :data:`TURN` timed ones. The first call
    after another runtime ran pays for the caches and threads that one took: on a 2-core Xeon
    it cost ONNX Runtime's INT8 ResNet-50 30 ms over its 86, and OpenVINO's 21 over 78, but
    its bf16 variant 2 ms, so one call each in turn ranked them unlike a steady stream does.
    """
    for _, runner in runners:
        for i in range(WARMUP):
            runner.predict(frames[i % len(frames)][None])
    done = 0
    while done < rounds:
        take = min(TURN, rounds - done)
        for c, runner in runners:
            for j in range(take + 1):
                frame = frames[(done + j) % len(frames)][None]
                t0 = time.perf_counter()
                runner.predict(frame)
                if j:
                    c.times_ms.append((time.perf_counter() - t0) * 1e3)
        done += take


def _record(best: Candidate, candidates: list[Candidate], frames: np.ndarray,
            rounds: int) -> dict[str, Any]:
    return {"chosen": {"variant": best.variant, "engine": best.engine,
                       "precision": best.precision},
            "criterion": dict(CRITERION), "exact_margin": EXACT_MARGIN,
            "machine": {"cpu": cpu_model(), "id": cpu_id(), "simd": simd_flags()},
            "frames": {"check": len(frames), "size": list(frames.shape[1:3]),
                       "rounds": rounds, "turn": TURN, "batch": 1},
            "candidates": [c.record() for c in candidates]}


def _describe(machine: dict[str, Any]) -> str:
    """A CPU's name, with family and model where recorded (VMs often hide the name)."""
    cpu_id = machine.get("id") or {}
    if "family" not in cpu_id:
        return str(machine.get("cpu"))
    return "%s (family %s model %s)" % (machine.get("cpu"), cpu_id["family"],
                                        cpu_id.get("model"))


def auto_runtime(bundle: ModelBundle, engine: Any = None,
                 options: dict[str, Any] | None = None) -> tuple[str | None, dict[str, Any]]:
    """The engine and runner options for ``bundle``, following its ``precision: auto`` choice.

    An ``engine`` the caller names, a device other than the CPU, or a bundle without
    ``export.auto`` leave things as they are. OpenVINO not installed here falls back to ONNX
    Runtime, bf16 on a CPU without it to fp32, each with a warning; a choice measured on
    another CPU is used with a warning that says how to measure again.
    """
    options = dict(options or {})
    auto = bundle.export.get("auto") if isinstance(bundle.export, dict) else None
    if engine is not None or not auto or options.get("device") not in (None, "auto", "cpu"):
        return (None if engine is None else str(getattr(engine, "value", engine))), options
    chosen = auto["chosen"]
    where = auto.get("machine", {})
    here = {"cpu": cpu_model(), "id": cpu_id(), "simd": simd_flags()}
    # Choices recorded before "id" was kept are compared by name and flags only.
    if (where.get("cpu"), where.get("simd"), where.get("id", here["id"])) != (
            here["cpu"], here["simd"], here["id"]):
        log.warning("%s: precision auto chose %s on %s; this CPU is %s: run posed export "
                    "--precision auto here to measure for it", bundle.path, chosen["engine"],
                    _describe(where), _describe(here))
    if chosen["engine"] == "openvino":
        if not engine_available(Engine.OPENVINO):
            log.warning("%s: precision auto chose openvino, but openvino is not installed "
                        "(pip install 'posed[openvino]'); running onnx", bundle.path)
            return "onnx", options
        precision = chosen["precision"]
        if precision == "bf16" and native_bf16() is None:
            log.warning("%s: precision auto chose bf16, but %s; running fp32", bundle.path,
                        NO_BF16)
            precision = "fp32"
        if options.get("precision", "auto") == "auto":
            options["precision"] = precision
        options.pop("provider", None)
    log.info("precision auto: %s on %s %s (chosen on %s)", chosen["variant"], chosen["engine"],
             options.get("precision", "fp32"), where.get("cpu"))
    return chosen["engine"], options
