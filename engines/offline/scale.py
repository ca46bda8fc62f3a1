"""Analysing many videos at once: a process pool on one machine, or a Ray cluster.

Both schedulers run the same task, :func:`analyze_task`: load the model once per worker
process, analyse one video with :func:`posed.engines.offline.analyze.analyze_one` (exactly what an
in-process run does) and return its :class:`~posed.engines.offline.analyze.VideoOutcome`. Workers
write the outputs themselves, beside the video or in ``dest``; the driver only collects the
small outcomes. On a cluster, videos, the model and ``dest`` must therefore have the same
paths on every node (a shared file system), and posed must be installed there.

Ray is imported only when a cluster is asked for; it comes with the ``cluster`` extra.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from posed.engines.dynamic import DynamicSettings
from posed.engines.offline.analyze import (VIDEO_SUFFIXES, AnalysisReport, BarFactory, OverallBar,
                                   VideoOutcome, analyze_one, expand_inputs)
from posed.errors import ConfigError, PosedError

if TYPE_CHECKING:
    from posed.engines.base import PoseRunner
    from posed.engines.bundle import ModelBundle

log = logging.getLogger(__name__)

CLUSTER_HINT = "pip install 'posed[cluster]'"


@dataclasses.dataclass(frozen=True)
class AnalysisJob:
    """Everything a worker needs besides the video: the model and the analysis settings.

    ``bundle`` is resolved once by the driver (a project's shuffle and snapshot become one
    bundle folder), so every worker loads exactly the same weights.
    """

    bundle: "ModelBundle"
    engine: str
    runner_options: tuple[tuple[str, Any], ...] = ()
    dest: str | None = None
    csv: bool = False
    batch_size: int = 8
    overwrite: bool = False
    tracking: dict | None = None  # identity settings of multi-animal models
    dynamic: tuple[float, int] | None = None  # dynamic cropping's (pcutoff, margin)


# ----------------------------------------------------------------------------- the task

# The runner of this worker process, kept across tasks: loading a model costs seconds.
_runner_cache: "tuple[tuple, PoseRunner] | None" = None
# Where a pool worker sends progress events; set by the pool's initializer.
_events: Any = None


def _runner_for(job: AnalysisJob) -> "PoseRunner":
    global _runner_cache
    from posed.engines.loading import load_model

    key = (str(job.bundle.path), tuple(w.get("sha256") for w in job.bundle.weights), job.engine,
           job.runner_options)
    if _runner_cache is None or _runner_cache[0] != key:
        if _runner_cache is not None:
            _runner_cache[1].close()
            _runner_cache = None
        runner = load_model(job.bundle, job.engine, **dict(job.runner_options))
        _runner_cache = (key, runner)
    return _runner_cache[1]


class _QueueBar:
    """A progress bar stand-in in a worker: sends events to the driver, which draws the bars.

    Updates are batched to a few per second, so a large cluster does not flood the driver.
    """

    INTERVAL_S = 0.25

    def __init__(self, events: Any, key: str, total: int | None, desc: str) -> None:
        self._events, self._key = events, key
        self._pending = 0
        self._sent = time.monotonic()
        events.put(("start", key, (total, desc)))

    def update(self, n: int) -> None:
        self._pending += n
        if time.monotonic() - self._sent >= self.INTERVAL_S:
            self._events.put(("update", self._key, self._pending))
            self._pending = 0
            self._sent = time.monotonic()

    def close(self) -> None:
        self._events.put(("close", self._key, None))


def analyze_task(job: AnalysisJob, video: str, events: Any = None) -> VideoOutcome:
    """Analyse one video in a worker: the task of the process pool and of Ray.

    ``events`` receives progress events for the driver's bars: a queue with ``put``, or
    ``"pool"`` for the queue a pool worker was started with; None draws no bars. A problem
    with the video comes back as a failed outcome; a model that cannot be loaded raises,
    since no video could be analysed.
    """
    runner = _runner_for(job)
    if isinstance(events, str):
        events = _events
    factory: BarFactory | None = None
    if events is not None:
        factory = lambda total, desc: _QueueBar(events, video, total, desc)  # noqa: E731
    return analyze_one(runner, Path(video), dest=Path(job.dest) if job.dest else None,
                       csv=job.csv, batch_size=job.batch_size, progress=factory is not None,
                       overwrite=job.overwrite, bar_factory=factory, tracking=job.tracking,
                       dynamic=None if job.dynamic is None else (True, *job.dynamic))


# ----------------------------------------------------------------------------- process pool

def _watch_parent(parent: int) -> None:
    # A driver killed with SIGKILL cannot stop its pool: leave rather than linger (a rerun
    # redoes whatever this worker had not finished).
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(events: Any, log_level: int) -> None:
    global _events
    _events = events
    logging.basicConfig(level=log_level, format="%(levelname)s: %(message)s")
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()


class _Board:
    """Draws one bar per video being analysed in a worker, from the workers' events.

    ``events`` is a queue (multiprocessing's or Ray's) that the workers put events into.
    """

    def __init__(self, events: Any) -> None:
        self._events = events
        self._thread = threading.Thread(target=self._run, name="posed-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from tqdm.auto import tqdm

        bars: dict[str, tuple[Any, int]] = {}
        while True:
            event = self._events.get()
            if event is None:
                break
            kind, key, value = event
            if kind == "start":
                used = {slot for _, slot in bars.values()}
                slot = next(i for i in range(1, len(bars) + 2) if i not in used)
                total, desc = value
                bars[key] = (tqdm(total=total, desc=desc, unit="frame", position=slot,
                                  leave=False), slot)
            elif key in bars and kind == "update":
                bars[key][0].update(value)
            elif key in bars and kind == "close":
                bars.pop(key)[0].close()
        for bar, _ in bars.values():
            bar.close()

    def close(self) -> None:
        self._events.put(None)
        self._thread.join(timeout=10)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _failure(video: Path, exc: BaseException) -> VideoOutcome:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    why = type(exc).__name__ + (f": {text}" if text else "")
    return VideoOutcome(video, error=f"{video}: {why}")


def run_pool(job: AnalysisJob, videos: Sequence[Path], workers: int, *,
             progress: bool = True) -> AnalysisReport:
    """Analyse ``videos`` in ``workers`` processes, one video per task.

    Each process loads the model once, with ``cores / workers`` inference threads unless the
    runner options name ``threads``.
    """
    import multiprocessing

    workers = max(1, min(workers, len(videos)))
    options = dict(job.runner_options)
    options.setdefault("threads", max(1, _cores() // workers))
    job = dataclasses.replace(job, runner_options=tuple(sorted(options.items())))
    report = AnalysisReport(where=f"{workers} worker processes")
    # Spawn, not fork: a forked copy of a process holding torch/CUDA or decoder threads can
    # deadlock, and spawn behaves the same on every OS.
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue() if progress else None
    board = _Board(events) if progress else None
    overall = OverallBar(len(videos), progress)
    t0 = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(events, logging.getLogger().getEffectiveLevel()))
    try:
        pending: dict[Future, Path] = {
            pool.submit(analyze_task, job, str(v), "pool" if progress else None): v
            for v in videos}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                video = pending.pop(fut)
                try:
                    outcome = fut.result()
                except PosedError:
                    raise  # the model cannot be loaded: no video can be analysed
                except BrokenProcessPool:
                    outcome = VideoOutcome(video, error=f"{video}: a worker process died "
                                           "(out of memory?); run again to resume")
                except Exception as exc:  # a bug or library failure on this video only
                    outcome = _failure(video, exc)
                report.add(outcome)
                overall.done(outcome)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        overall.close()
        if board is not None:
            board.close()
    report.seconds = time.perf_counter() - t0
    return report


# ----------------------------------------------------------------------------- Ray

def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--cluster needs Ray: {CLUSTER_HINT}") from None
    return ray


def connect_ray(address: str) -> bool:
    """Join (or start) a Ray cluster; returns True when this call started the connection.

    ``auto``: the running cluster found by Ray (``RAY_ADDRESS``, or one started on this
    machine with ``ray start --head``); ``local``: a new Ray instance on this machine only;
    otherwise a head address, ``host:port`` or ``ray://host:port``. An existing connection
    (``ray.init`` called by the caller) is used as it is.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address == "local":
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError... depending on cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (start one with 'ray start --head', or use --cluster local)" \
            if address == "auto" else ""
        raise ConfigError(f"--cluster {address}: cannot connect to Ray: {first}{hint}") from None
    return True


def run_ray(job: AnalysisJob, videos: Sequence[Path], address: str = "auto", *,
            task_cpus: float = 1.0, task_gpus: float = 0.0,
            progress: bool = True) -> AnalysisReport:
    """Analyse ``videos`` on a Ray cluster, one task per video with declared resources.

    Each task asks for ``task_cpus`` CPUs (also its inference threads) and ``task_gpus``
    GPUs. A Ray connection made by this call is closed at the end.
    """
    ray = _import_ray()
    options = dict(job.runner_options)
    options.setdefault("threads", max(1, int(task_cpus)))
    job = dataclasses.replace(job, runner_options=tuple(sorted(options.items())))
    started = connect_ray(address)
    try:
        res = ray.cluster_resources()
        report = AnalysisReport(where=f"Ray cluster ({res.get('CPU', 0):g} CPUs, "
                                f"{res.get('GPU', 0):g} GPUs)")
        events = board = None
        if progress:
            from ray.util.queue import Queue

            # Workers anywhere in the cluster report progress through a queue actor; the
            # driver draws the bars exactly as for the process pool.
            events = Queue(actor_options={"num_cpus": 0})
            board = _Board(events)
        overall = OverallBar(len(videos), progress)
        t0 = time.perf_counter()
        task = ray.remote(analyze_task).options(num_cpus=task_cpus, num_gpus=task_gpus,
                                                max_retries=1)
        job_ref = ray.put(job)
        pending = {task.remote(job_ref, str(v), events): v for v in videos}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    video = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        if isinstance(cause, PosedError):
                            raise cause from None  # the model cannot be loaded
                        outcome = _failure(video, cause if cause is not None else exc)
                    except ray.exceptions.RayError as exc:  # worker crashed, node lost, ...
                        outcome = _failure(video, exc)
                    report.add(outcome)
                    overall.done(outcome)
        finally:
            for ref in pending:
                ray.cancel(ref)
            overall.close()
            if board is not None:
                board.close()
        report.seconds = time.perf_counter() - t0
        return report
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------- entry point

def analyze_distributed(source: "str | Path", videos: Sequence["str | Path"],
                        engine: str | None = None, *, shuffle: int = 1,
                        snapshot: int | str | None = None, runner_options: dict | None = None,
                        workers: int = 1, cluster: str | None = None, task_cpus: float = 1.0,
                        task_gpus: float | None = None, dest: "str | Path | None" = None,
                        csv: bool = False, batch_size: int = 8, progress: bool = True,
                        overwrite: bool = False, tracking: dict | None = None,
                        allow_truncated: bool = False, dynamic: Any = None) -> AnalysisReport:
    """Analyse videos, folders or globs with ``workers`` local processes or on a Ray ``cluster``.

    Outputs equal those of :func:`posed.engines.offline.analyze.analyze_videos` and resuming works
    the same (``allow_truncated`` too). ``task_gpus`` defaults to 1 when ``runner_options`` ask
    for a CUDA device.
    """
    from posed.engines.loading import resolve_bundle
    from posed.engines.registry import Engine, engine_available, get_backend

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if cluster is not None:
        _import_ray()  # before any work: a missing extra is one clear line
    settings = DynamicSettings.parse(dynamic)
    found = [Path(v).absolute() for v in expand_inputs(videos, VIDEO_SUFFIXES)]
    options = dict(runner_options or {})
    # Workers may run elsewhere (another cwd, another node): hand them absolute paths.
    src = source if not isinstance(source, (str, Path)) else Path(source).absolute()
    bundle = resolve_bundle(src, engine, shuffle=shuffle, snapshot=snapshot)
    eng = Engine.parse(engine if engine is not None else bundle.engine).value
    if cluster is None and not engine_available(eng):
        get_backend(eng)  # raises with the install hint
    job = AnalysisJob(bundle=bundle, engine=eng, runner_options=tuple(sorted(options.items())),
                      dest=str(Path(dest).absolute()) if dest is not None else None, csv=csv,
                      batch_size=batch_size, overwrite=overwrite, tracking=tracking,
                      dynamic=None if settings is None else (settings.pcutoff, settings.margin))
    if not found:
        return AnalysisReport(allow_truncated=allow_truncated)
    if cluster is None:
        report = run_pool(job, found, workers, progress=progress)
    else:
        if task_gpus is None:
            task_gpus = 1.0 if str(options.get("device", "")).startswith("cuda") else 0.0
        report = run_ray(job, found, cluster, task_cpus=task_cpus, task_gpus=task_gpus,
                         progress=progress)
    report.allow_truncated = allow_truncated
    return report
