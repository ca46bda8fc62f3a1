"""``posed bench``: a suite of named performance cases (issue 7).

Each case is a function ``case(opts) -> dict`` of figures registered in :data:`CASES`.
:func:`run` runs the selected cases and returns one record (date, machine, versions,
options, results); :func:`to_markdown` renders it as a short table. Figures are reported,
never asserted: targets are judged by whoever reads them.

The package never imports a framework: FLOP counts, torch's matmul, the CUDA device and
randomly initialised bundles come through :func:`posed.engines.registry.capability`.
Modules: :mod:`~posed.bench.assets` (options, demo model and clip), :mod:`~posed.bench.stats`
(timing, percentiles), :mod:`~posed.bench.machine`, :mod:`~posed.bench.service` (the daemon
in-process), :mod:`~posed.bench.cases`, :mod:`~posed.bench.pipeline`, :mod:`~posed.bench.gpu`,
:mod:`~posed.bench.suite` and :mod:`~posed.bench.report`.

Example:
    >>> record = run(["decode"], BenchOptions(seconds=0.5))
    >>> print(to_markdown(record))
"""

from posed.bench.assets import DEMO, DEMO_CLIP, DEMO_MODEL, BenchOptions
from posed.bench.gpu import GPU_MODES, gpu_figures
from posed.bench.machine import AVX2_LIMITS, machine_info
from posed.bench.report import to_markdown
from posed.bench.stats import flatness, measure, measure_in_thread, percentiles, time_calls
from posed.bench.suite import CASES, list_cases, run

__all__ = ["AVX2_LIMITS", "CASES", "DEMO", "DEMO_CLIP", "DEMO_MODEL", "GPU_MODES", "BenchOptions",
           "flatness", "gpu_figures", "list_cases", "machine_info", "measure", "measure_in_thread",
           "percentiles", "run", "time_calls", "to_markdown"]
