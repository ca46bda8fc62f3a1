"""The cases by name, and running a selection of them into one record."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict
from typing import Any, Callable

from posed.bench.assets import BenchOptions, model_label
from posed.bench.cases import (case_decode, case_engine, case_families, case_matmul,
                               case_resources)
from posed.bench.gpu import case_gpu
from posed.bench.machine import machine_info
from posed.bench.pipeline import case_multicam, case_pipeline, case_publisher
from posed.errors import ConfigError

CASES: dict[str, Callable[[BenchOptions], dict[str, Any]]] = {
    "engine": case_engine,
    "decode": case_decode,
    "pipeline": case_pipeline,
    "publisher": case_publisher,
    "resources": case_resources,
    "matmul": case_matmul,
    "multicam": case_multicam,
    "gpu": case_gpu,
    "families": case_families,
}


def list_cases() -> list[tuple[str, str]]:
    """Every case as (name, one-line description), in run order."""
    return [(name, (fn.__doc__ or "").strip().splitlines()[0]) for name, fn in CASES.items()]


def run(cases: list[str] | None, opts: BenchOptions) -> dict[str, Any]:
    """Run the named cases (all when empty) and return the record.

    Raises:
        ConfigError: A case name is unknown.
    """
    names = list(cases or CASES)
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise ConfigError(f"unknown bench case '{unknown[0]}' (cases: {', '.join(CASES)})")
    results: dict[str, Any] = {}
    for name in names:
        t0 = time.perf_counter()
        figures = CASES[name](opts)
        results[name] = {**figures, "case_s": round(time.perf_counter() - t0, 2)}
    config = asdict(opts)
    config["model"] = model_label(opts)
    return {"benchmark": "posed bench",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "config": config, "results": results}
