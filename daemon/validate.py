"""The start-up checks of ``posed serve``, shared with ``posed config check``.

:func:`check_startup` is the one place that decides whether a parsed config can be served:
every camera's settings as capture will use them, the model bundle with each weights file's
hash, the engine options, the hook, and the CurveZMQ key files. It opens files but starts no
camera, binds no socket and loads no framework, so ``config check`` runs it as is and refuses
exactly what ``serve`` refuses, with the same line (a :class:`~posed.errors.ConfigError`,
exit status 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from posed.daemon.config import CameraConfig, DaemonConfig, load_config, non_loopback_endpoints
from posed.errors import ConfigError, PosedError

if TYPE_CHECKING:
    from posed.daemon.capture import CameraSpec

__all__ = ["Startup", "camera_spec", "check_config", "check_startup", "runner_options"]


@dataclass(frozen=True)
class Startup:
    """What :func:`check_startup` verified, for the service to use as is.

    Attributes:
        bundle: The model bundle, every weights file's hash checked.
        engine: The engine that will load it.
        options: Options for :func:`~posed.engines.api.load_model`.
        hook: The processors hook, built once, or None.
        cameras: Each camera as capture opens it, in config order.
    """

    bundle: Any
    engine: Any
    options: dict[str, Any]
    hook: Callable[..., Any] | None
    cameras: tuple[CameraSpec, ...]


def camera_spec(cam: CameraConfig) -> CameraSpec:
    """The capture settings of a ``cameras`` entry.

    Raises:
        ConfigError: a setting capture refuses (e.g. ``fps`` on a file, ``reconnect_initial_s``
            above ``reconnect_max_s``).
    """
    from posed.daemon.capture import CameraSpec

    return CameraSpec(
        id=cam.id, source=cam.source, kind=cam.kind, pace=cam.pace, loop=cam.loop,
        policy=cam.policy, width=cam.width, height=cam.height, fps=cam.fps,
        pixel_format=cam.pixel_format, options=dict(cam.options),
        reconnect_initial_s=cam.reconnect_initial_s, reconnect_max_s=cam.reconnect_max_s,
        queue_size=cam.queue_size)


def runner_options(m: Any, bundle: Any) -> tuple[Any, dict[str, Any]]:
    """The engine and :func:`~posed.engines.api.load_model` options for a ``model`` section.

    Raises:
        ConfigError: an option that the bundle's engine/format cannot honour.
    """
    from posed.engines import api
    from posed.engines.autoprecision import auto_runtime

    # Without an engine or a device named, a bundle exported with precision auto runs where
    # that measurement chose (OpenVINO's precision included).
    chosen, auto = auto_runtime(bundle, m.engine, {"device": m.device})
    engine = api.Engine.parse(chosen or bundle.engine)
    options: dict[str, Any] = {"threads": m.threads} if m.threads else {}
    if "topdown" in bundle.architecture:
        options["detect_every"] = m.detect_every
        if m.crop_batch is not None:
            options["crop_batch"] = m.crop_batch
    else:
        for key, unset in (("detect_every", 1), ("crop_batch", None)):
            if getattr(m, key) != unset:
                raise ConfigError(f"key 'model.{key}': only top-down models (a detector, then "
                                  f"the pose model on crops) have it; {bundle.path} is not one")
    fast_path = engine is api.Engine.PYTORCH and bundle.format == "safetensors"
    if engine is api.Engine.OPENVINO:
        if m.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"key 'model.precision': '{m.precision}' is not one the openvino "
                              "engine runs (auto, fp32, bf16)")
        if m.device not in ("auto", "cpu"):
            raise ConfigError(f"key 'model.device': the openvino engine runs on the cpu, not "
                              f"'{m.device}'")
        options["precision"] = auto.get("precision", "fp32") if m.precision == "auto" \
            else m.precision
        _check_format(engine, bundle)
        return engine, options
    if m.precision != "auto" and not fast_path:
        hint = " (export the ONNX bundle with --fp16 or --int8 instead)" if engine is api.Engine.ONNX else ""
        raise ConfigError(f"key 'model.precision': '{m.precision}' needs a pytorch safetensors "
                          f"bundle; {bundle.path} is {engine.value}/{bundle.format}{hint}")
    _check_format(engine, bundle)
    if engine is api.Engine.ONNX:
        options["provider"] = m.provider
        if m.device != "auto":
            options["device"] = m.device
    elif fast_path:
        options.update(device=m.device, precision=m.precision, cuda_graphs=m.cuda_graphs,
                       channels_last=m.channels_last)
    else:
        options["device"] = m.device
    return engine, options


def _check_format(engine: Any, bundle: Any) -> None:
    """ONNX Runtime and OpenVINO run ONNX bundles only (what their runners would refuse)."""
    if engine.value in ("onnx", "openvino") and bundle.format != "onnx":
        raise ConfigError(f"key 'model.engine': the {engine.value} engine runs onnx bundles; "
                          f"{bundle.path} is {bundle.format} (export one: posed export "
                          "--format onnx)")


def _refuse(cfg: DaemonConfig, key: str, exc: Exception) -> ConfigError:
    """``exc`` as the config's error: one line naming the file and the key."""
    # A value from the config (a hook name, a path) may hold a newline or a terminal escape.
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(exc))
    if text.startswith(f"{cfg.source}: "):
        return ConfigError(text)
    return ConfigError(f"{cfg.source}: {key}: {text}" if key else f"{cfg.source}: {text}")


def _check_curve(cfg: DaemonConfig) -> None:
    """Open the server's secret key and every allowed client's public key, as the publisher
    will."""
    from posed.daemon.keys import CurveServer, load_secret_keys, warn_if_exposed

    curve = cfg.publisher.curve
    if curve is None:
        return
    try:
        load_secret_keys(curve.server_secret_key)
    except PosedError as exc:
        raise _refuse(cfg, "key 'publisher.curve.server_secret_key'", exc) from None
    try:
        CurveServer(curve.server_secret_key, curve.allowed_clients).load()
    except PosedError as exc:
        raise _refuse(cfg, "key 'publisher.curve.allowed_clients'", exc) from None
    warn_if_exposed(curve.server_secret_key)


def check_startup(cfg: DaemonConfig) -> Startup:
    """Everything ``posed serve`` verifies before it starts a camera.

    Raises:
        ConfigError: ``"<config file>: <key or file>: <what is wrong>"``, one line.
    """
    from posed.engines.loading import load_served_model

    cameras = []
    for cam in cfg.cameras:
        try:
            cameras.append(camera_spec(cam))
        except ConfigError as exc:
            raise _refuse(cfg, "", exc) from None
    try:
        # A bundle (every weights file's sha256 verified) or a DeepLabCut shuffle folder.
        bundle = load_served_model(cfg.model.bundle)
    except PosedError as exc:
        raise _refuse(cfg, "key 'model.bundle'", exc) from None
    dynamic = [i for i, c in enumerate(cfg.cameras) if c.dynamic is not None and c.dynamic.enabled]
    if dynamic and "individuals" in bundle.architecture:
        raise _refuse(cfg, f"key 'cameras[{dynamic[0]}].dynamic'", ConfigError(
            "dynamic cropping follows one animal; the model is multi-animal"))
    try:
        engine, options = runner_options(cfg.model, bundle)
    except PosedError as exc:
        raise _refuse(cfg, "", exc) from None
    hook = None
    if cfg.processors.hook:
        from posed.daemon.processors import load_hook

        try:
            hook = load_hook(cfg.processors.hook, cfg.processors.hook_args)
        except PosedError as exc:
            raise _refuse(cfg, "", exc) from None
        except Exception as exc:  # noqa: BLE001 - the user's module ran, and may raise anything
            raise _refuse(cfg, "key 'processors.hook'", RuntimeError(
                f"cannot load {cfg.processors.hook!r} ({type(exc).__name__}: {exc})")) from None
    _check_curve(cfg)
    return Startup(bundle=bundle, engine=engine, options=options, hook=hook,
                   cameras=tuple(cameras))


def check_config(path: str | Path) -> str:
    """Read ``path`` and run :func:`check_startup` on it; a one-paragraph summary.

    Raises:
        ConfigError: whatever ``posed serve`` would refuse, in the same words.
    """
    cfg = load_config(path)
    startup = check_startup(cfg)
    bundle = startup.bundle
    m = cfg.metrics
    lines = [f"{path}: ok",
             f"  model: {bundle.path} ({bundle.engine}/{bundle.format}, {len(bundle.bodyparts)} "
             f"body parts: {', '.join(bundle.bodyparts)})",
             *[f"  camera {c.id}: {c.source} ({s.resolved_kind()}, policy {s.resolved_policy()})"
               for c, s in zip(cfg.cameras, startup.cameras)],
             f"  batching: max_batch {cfg.batching.max_batch}, "
             f"max_delay {cfg.batching.max_delay_ms} ms",
             f"  publisher: {cfg.publisher.endpoint}{' (CurveZMQ)' if cfg.publisher.curve else ''}",
             f"  metrics: {f'http://{m.host}:{m.port}/metrics' if m.enabled else 'off'}"]
    for endpoint in non_loopback_endpoints(cfg):
        lines.append(f"  warning: {endpoint} listens beyond this machine")
    return "\n".join(lines)
