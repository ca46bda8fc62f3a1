"""The daemon's configuration file: schema, loading and one-line errors.

Every section forbids unknown keys, so a misspelt key is an error that names it instead of
a setting silently ignored. Relative paths are resolved against the config file's folder,
so a config and its model can move together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, Strict, ValidationError,
                      field_validator, model_validator)

from posed.engines.dynamic import MAX_MARGIN
from posed.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")

# Numbers are what YAML wrote, never coerced: `true` is not 1, "5" is not 5, and a float
# must be finite (allow_inf_nan below). Floats still accept integers (`max_delay_ms: 2`).
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
# Largest frame side any camera or resize may name (V4L2 and FFmpeg limits are near this).
MAX_SIDE = 16384
Side = Annotated[int, Strict(), Field(ge=1, le=MAX_SIDE)]
Offset = Annotated[int, Strict(), Field(ge=0, le=MAX_SIDE)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelConfig(_Strict):
    """Which model runs and where."""

    bundle: Path = Field(description="model bundle folder (posed.yaml inside), or a DeepLabCut "
                               "shuffle folder (dlc-models-pytorch/iteration-N/<shuffle>/train)")
    engine: str | None = Field(None, description="engine; default: the bundle's")
    device: str = Field("auto", description="pytorch: auto, cpu, cuda, cuda:N")
    provider: str = Field("auto", description="onnx: auto, tensorrt, cuda, cpu")
    threads: Int | None = Field(None, ge=1, le=1024, description="intra-op threads")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="pytorch: auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16; "
        "openvino: auto (the bundle's precision-auto choice, else fp32), fp32, bf16")
    channels_last: Bool | None = Field(
        None, description="pytorch: NHWC convolutions (default: on for CUDA, off for CPU)")
    cuda_graphs: Bool = Field(True, description="pytorch on CUDA: replay a graph per input shape")
    warmup: Bool = Field(True, description="run dummy batches before reporting ready")
    detect_every: Int = Field(1, ge=1, le=100000, description="top-down models: run the "
                              "detector on every Nth frame of each camera, reusing its boxes "
                              "in between")
    crop_batch: Int | None = Field(None, ge=1, le=4096, description="top-down models: crops "
                                   "per pose-model batch (default 8)")


class DynamicConfig(_Strict):
    """Dynamic cropping, DeepLabCut-Live's ``dynamic``: infer on the box around the last
    frame's confident body parts, the whole frame when there are none."""

    enabled: Bool = True
    pcutoff: Float = Field(0.5, ge=0, le=1, description="likelihood a body part needs to count")
    margin: Int = Field(10, ge=0, le=MAX_MARGIN,
                        description="pixels added around the found parts")

    @model_validator(mode="before")
    @classmethod
    def _triple(cls, value: Any) -> Any:
        # DeepLabCut-Live's form, (enabled, pcutoff, margin), as a YAML list.
        if isinstance(value, (list, tuple)) and len(value) == 3:
            return dict(zip(("enabled", "pcutoff", "margin"), value))
        return value


class CameraConfig(_Strict):
    """One video source."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=200,
                    description="camera id, used in topics")
    source: str = Field(description="file, /dev/videoN, rtsp://, http://...")
    kind: Literal["auto", "file", "v4l2", "stream"] = "auto"
    pace: Literal["native", "fast"] = Field("native", description="files: real time or fast")
    loop: Bool = False
    policy: Literal["auto", "lossless", "latest"] = "auto"
    width: Side | None = None
    height: Side | None = None
    fps: Float | None = Field(None, gt=0, le=1000)
    pixel_format: str | None = None
    options: dict[str, str] = Field(default_factory=dict)
    reconnect_initial_s: Float = Field(0.5, gt=0, le=3600)
    reconnect_max_s: Float = Field(10.0, gt=0, le=3600)
    queue_size: Int = Field(4, ge=1, le=1024)
    crop: tuple[Offset, Offset, Side, Side] | None = Field(
        None, description="x, y, width, height of the region passed to the model")
    resize: tuple[Side, Side] | None = Field(
        None, description="width, height the (cropped) frame is resized to before inference")
    dynamic: DynamicConfig | None = Field(
        None, description="dynamic cropping: {enabled, pcutoff, margin} or [enabled, pcutoff, "
        "margin]; single-animal models")

    @model_validator(mode="after")
    def _crop_inside_frame(self) -> "CameraConfig":
        # The frame size is known here only when the camera is told its size (V4L2); files
        # and streams are checked against their first frame.
        if self.crop is not None and self.width is not None and self.height is not None:
            x, y, w, h = self.crop
            if x + w > self.width or y + h > self.height:
                raise ValueError(f"camera '{self.id}': crop {list(self.crop)} reaches outside "
                                 f"the {self.width}x{self.height} frame")
        return self


class BatchingConfig(_Strict):
    """How frames from all cameras are grouped for inference."""

    max_batch: Int = Field(4, ge=1, le=256)
    max_delay_ms: Float = Field(2.0, ge=0, le=1000, description="longest wait for a fuller batch")


class KalmanConfig(_Strict):
    """Constant-velocity forward prediction of each keypoint to publish time + lead."""

    enabled: Bool = False
    lead_ms: Float = Field(0.0, ge=0, le=1000, description="extra look-ahead beyond publish time")
    process_noise: Float = Field(500.0, gt=0, le=1e7, description="px/s² acceleration noise")
    measurement_noise: Float = Field(2.0, gt=0, le=1e4, description="px measurement noise")
    min_likelihood: Float = Field(0.1, ge=0, le=1, description="updates below it are skipped")


class ProcessorsConfig(_Strict):
    """Per-pose processing between inference and publishing."""

    hook: str | None = Field(None, description="'package.module:callable' or an entry point "
                             "name in group 'posed.processors'")
    hook_args: dict[str, Any] = Field(default_factory=dict)
    kalman: KalmanConfig = Field(default_factory=KalmanConfig)


class CurveConfig(_Strict):
    """CurveZMQ encryption and client authentication."""

    server_secret_key: Path
    allowed_clients: Path | None = Field(None, description="folder of allowed client public keys")


class PublisherConfig(_Strict):
    """The ZeroMQ PUB socket."""

    endpoint: str = "tcp://127.0.0.1:5555"
    hwm: Int = Field(1000, ge=1, le=1_000_000)
    queue_size: Int = Field(256, ge=1, le=100_000)
    curve: CurveConfig | None = None
    wait_for_subscribers: Int = Field(0, ge=0, le=1000, description="start capturing only once "
                                      "this many subscribers are connected (no lost first "
                                      "frames)")
    wait_timeout_s: Float = Field(30.0, gt=0, le=86400,
                                  description="give up waiting and start anyway")
    nodrop: Bool = Field(False, description="true: a subscriber hwm behind holds every pose back "
                         "from all (counted as hwm drops); false: it loses only its own")

    @field_validator("endpoint")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("tcp://", "ipc://", "inproc://")):
            raise ValueError("must start with tcp://, ipc:// or inproc://")
        return value


class RecorderConfig(_Strict):
    """Optional recording of published poses into DeepLabCut-format tables."""

    path: Path | None = Field(None, description="h5 file; one file per camera when several")
    csv: Bool = False
    flush_every_s: Float = Field(10.0, gt=0, le=3600)


class MetricsConfig(_Strict):
    """Prometheus endpoint."""

    enabled: Bool = True
    host: str = "127.0.0.1"
    port: Int = Field(9108, ge=0, le=65535)


class DaemonConfig(_Strict):
    """The whole ``posed serve`` configuration.

    ``source`` is the file it was read from (for error lines of the start-up checks).
    """

    model: ModelConfig
    cameras: list[CameraConfig] = Field(min_length=1, max_length=256)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    processors: ProcessorsConfig = Field(default_factory=ProcessorsConfig)
    publisher: PublisherConfig = Field(default_factory=PublisherConfig)
    recorder: RecorderConfig = Field(default_factory=RecorderConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout_s: Float = Field(
        3.0, gt=0, le=300, description="on SIGTERM, longest wait for queued frames and the "
        "batch in progress; keep it 2 s below systemd's TimeoutStopSec")
    _source: str = PrivateAttr("config")

    @property
    def source(self) -> str:
        """The config file's name as given to :func:`load_config` (``config`` if parsed)."""
        return self._source

    @model_validator(mode="after")
    def _unique_cameras(self) -> "DaemonConfig":
        ids = [c.id for c in self.cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"camera id '{dupes[0]}' is used twice")
        return self


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        name = str(part)
        if not name.isprintable():  # a key with a newline or tab must not break the line
            name = repr(name)[1:-1]
        out += f"[{name}]" if isinstance(part, int) else (f".{name}" if out else name)
    return out or "(top level)"


def _describe(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    where = _location(tuple(err.get("loc", ())))
    if not err.get("loc"):
        return err.get("msg", "invalid").replace("Value error, ", "")
    if kind == "extra_forbidden":
        return f"unknown key '{where}'"
    if kind == "missing":
        return f"missing key '{where}'"
    value = err.get("input")
    msg = err.get("msg", "invalid").replace("Value error, ", "")
    if isinstance(value, (dict, list)):
        # A section-level check says itself what is wrong; its input is the whole section.
        return f"key '{where}': {msg}" if kind == "value_error" else \
            f"key '{where}': {msg} (got {type(value).__name__})"
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."  # the line stays short
    return f"key '{where}': {msg} (got {shown})"


def parse_config(data: Any, source: str = "config", base: Path | None = None) -> DaemonConfig:
    """Validate a parsed YAML mapping; relative paths resolve against ``base``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        cfg = DaemonConfig.model_validate(data)
    except RecursionError:
        raise ConfigError(f"{source}: values nested too deeply") from None
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(errors[0])}{more}") from None
    if base is not None:
        cfg = _resolve_paths(cfg, base)
    cfg._source = source
    return cfg


def _resolve_paths(cfg: DaemonConfig, base: Path) -> DaemonConfig:
    def rel(path: Path | None) -> Path | None:
        return None if path is None or path.is_absolute() else base / path

    model = cfg.model.model_copy(update={"bundle": rel(cfg.model.bundle) or cfg.model.bundle})
    cameras = []
    for cam in cfg.cameras:
        kind = cam.kind
        looks_local = "://" not in cam.source and not cam.source.startswith("/dev/")
        if kind in ("auto", "file") and looks_local and not Path(cam.source).is_absolute():
            cam = cam.model_copy(update={"source": str(base / cam.source)})
        cameras.append(cam)
    updates: dict[str, Any] = {"model": model, "cameras": cameras}
    if cfg.recorder.path is not None:
        updates["recorder"] = cfg.recorder.model_copy(
            update={"path": rel(cfg.recorder.path) or cfg.recorder.path})
    if cfg.publisher.curve is not None:
        curve = cfg.publisher.curve
        updates["publisher"] = cfg.publisher.model_copy(update={"curve": curve.model_copy(update={
            "server_secret_key": rel(curve.server_secret_key) or curve.server_secret_key,
            "allowed_clients": rel(curve.allowed_clients) or curve.allowed_clients})})
    return cfg.model_copy(update=updates)


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping.

    Plain PyYAML keeps the last of two ``batching:`` sections without a word, so half of a
    config would be ignored. Keys brought in by a ``<<`` merge may still be overridden.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{str(key)[:60]}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path) -> DaemonConfig:
    """Read and validate a daemon config file.

    Raises:
        ConfigError: missing file, YAML syntax error (with line), a key given twice, unknown
            key, wrong type or a number out of range.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{path}: invalid YAML{line} ({problem})") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    return parse_config(data, str(path), path.resolve().parent)


def non_loopback_endpoints(cfg: DaemonConfig) -> list[str]:
    """Network endpoints of ``cfg`` that listen beyond this machine."""
    found = []
    pub = cfg.publisher.endpoint
    if pub.startswith("tcp://"):
        host = pub[len("tcp://"):].rsplit(":", 1)[0]
        if host not in LOOPBACK:
            found.append(pub)
    if cfg.metrics.enabled and cfg.metrics.host not in LOOPBACK:
        found.append(f"http://{cfg.metrics.host}:{cfg.metrics.port}/metrics")
    return found
