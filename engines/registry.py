"""The engine registry: which engines exist, where their code lives, and what each can do.

Backends are registered by *module path* and imported only when used, so importing this
module never imports torch or tensorflow. An engine may provide any of these capabilities
(see :func:`capability`), in its backend module or in a module its :class:`BackendSpec`
names under ``tools`` (exporters, importers and the ReID model live outside the backend):

- ``train(project, shuffle, config, progress) -> Path``: train and return the train folder;
- ``load_runner(bundle, **options) -> PoseRunner``: inference;
- ``export(bundle, fmt, out, **options) -> Path``: export a bundle;
- ``import_dlc(source, out, *, overwrite) -> Path``: a DeepLabCut export as a posed bundle;
- ``import_dlc_snapshot(pose_cfg, snapshot, out, *, source) -> Path``: a DeepLabCut shuffle's
  training snapshot as a posed bundle (what serves a shuffle folder in place);
- ``export_dlc_live(pose_cfg, snapshot, out, *, wipepaths, detector) -> Path``: a DeepLabCut shuffle's
  snapshot as the ``.pt`` DeepLabCut-Live loads;
- ``publish_dlc_snapshot(weights, out, epoch) -> Path``: a posed snapshot of a DeepLabCut
  architecture as DeepLabCut's ``snapshot-NNN.pt``;
- ``train_reid(dataset, out, **options) -> Path`` and ``load_reid(folder)``: the
  re-identification model of multi-animal tracking.

Whatever an engine does not provide raises :class:`CapabilityError` naming the engines that can.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Mapping

from posed.errors import CapabilityError, ConfigError, EngineUnavailableError

if TYPE_CHECKING:
    from posed.engines.project import Project


class Engine(str, enum.Enum):
    """Known engines; aliases resolve through :meth:`parse`."""

    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"
    ONNX = "onnx"
    OPENVINO = "openvino"
    TF = "tensorflow"  # noqa: PIE796 DeepLabCut's name for the TensorFlow engine (an alias: TF is TENSORFLOW)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Every name :meth:`parse` accepts for this engine."""
        return tuple(k for k, v in _ALIASES.items() if v is self)

    @property
    def model_folder_name(self) -> str:
        """DeepLabCut's folder of this engine's shuffles (``dlc-models-pytorch``, ``dlc-models``)."""
        return _dlc_names(self)[0]

    @property
    def pose_cfg_name(self) -> str:
        """DeepLabCut's model config file in a shuffle's ``train/`` folder."""
        return _dlc_names(self)[1]

    @property
    def results_folder_name(self) -> str:
        """DeepLabCut's evaluation results folder of this engine."""
        return _dlc_names(self)[2]

    @classmethod
    def parse(cls, name: "str | Engine") -> "Engine":
        """Resolve a name or alias; unknown names raise :class:`ConfigError` listing valid ones."""
        if isinstance(name, Engine):
            return name
        key = str(name).strip().lower()
        if key in _ALIASES:
            return _ALIASES[key]
        known = ", ".join(sorted(_ALIASES))
        raise ConfigError(f"unknown engine '{name}' (known: {known})")


_ALIASES: dict[str, Engine] = {
    "pytorch": Engine.PYTORCH,
    "torch": Engine.PYTORCH,
    "tensorflow": Engine.TENSORFLOW,
    "tf": Engine.TENSORFLOW,
    "onnx": Engine.ONNX,
    "onnxruntime": Engine.ONNX,
    "openvino": Engine.OPENVINO,
    "ov": Engine.OPENVINO,
}
# DeepLabCut's folder and file names per engine (its Engine members carry the same three).
_DLC_NAMES = {
    "pytorch": ("dlc-models-pytorch", "pytorch_config.yaml", "evaluation-results-pytorch"),
    "tensorflow": ("dlc-models", "pose_cfg.yaml", "evaluation-results"),
}


def _dlc_names(engine: Engine) -> tuple[str, str, str]:
    if engine.value not in _DLC_NAMES:
        raise CapabilityError(f"DeepLabCut has no '{engine.value}' engine (it has pytorch and "
                              "tensorflow)")
    return _DLC_NAMES[engine.value]


DEFAULT_ENGINE = Engine.PYTORCH


@dataclass(frozen=True)
class BackendSpec:
    """Where an engine's implementation lives and what it needs installed."""

    module: str
    requires: str  # top-level module that must be importable
    extra: str  # pip extra that installs it
    hint: str = ""  # install advice when the extra alone is not the whole story
    tools: Mapping[str, str] = field(default_factory=dict)
    """Capabilities implemented outside the backend module, ``name -> "module:attribute"``;
    the module is imported only when the capability is asked for."""

    def install_hint(self) -> str:
        """What to run to make this engine available."""
        return self.hint or f"pip install 'posed[{self.extra}]'"


_REGISTRY: dict[Engine, BackendSpec] = {}


def register_engine(engine: Engine, spec: BackendSpec) -> None:
    """Register a backend for ``engine``; registering one engine twice is an error."""
    if engine in _REGISTRY:
        raise ValueError(f"engine '{engine.value}' is already registered")
    _REGISTRY[engine] = spec


register_engine(Engine.PYTORCH, BackendSpec(
    "posed.engines.pytorch.backend", "torch", "torch",
    tools={"export": "posed.exporters.torch:export",
           "import_dlc": "posed.exporters.dlc:import_dlc_pytorch",
           "import_dlc_snapshot": "posed.exporters.dlc:import_dlc_snapshot",
           "export_dlc_live": "posed.exporters.dlc:export_dlc_live",
           "publish_dlc_snapshot": "posed.exporters.dlc:publish_dlc_snapshot",
           "train_reid": "posed.engines.pytorch.reid:train_reid",
           "load_reid": "posed.engines.pytorch.reid:ReIDModel"}))
register_engine(Engine.TENSORFLOW, BackendSpec(
    "posed.engines.tensorflow.backend", "tensorflow", "tensorflow",
    tools={"export": "posed.exporters.tensorflow:export",
           "import_dlc": "posed.exporters.dlc2:import_dlc_tensorflow",
           "import_dlc_snapshot": "posed.exporters.dlc2:import_dlc_tf_snapshot"}))
register_engine(Engine.ONNX, BackendSpec(
    "posed.engines.onnx.backend", "onnxruntime", "gpu",
    hint="pip install onnxruntime (CPU) or 'posed[gpu]' (CUDA/TensorRT), never both"))
register_engine(Engine.OPENVINO, BackendSpec(
    "posed.engines.openvino.backend", "openvino", "openvino"))


def list_engines() -> list[str]:
    """Names of registered engines (imports nothing)."""
    return [e.value for e in _REGISTRY]


def engine_available(engine: "str | Engine") -> bool:
    """True when the engine is registered and its framework can be imported."""
    spec = _REGISTRY.get(Engine.parse(engine))
    return spec is not None and importlib.util.find_spec(spec.requires) is not None


def get_backend(engine: "str | Engine") -> ModuleType:
    """Import and return the backend module of ``engine``.

    Raises:
        ConfigError: unknown engine name.
        EngineUnavailableError: not registered yet, or its framework is not installed.
    """
    eng = Engine.parse(engine)
    spec = _REGISTRY.get(eng)
    if spec is None:
        raise EngineUnavailableError(
            f"engine '{eng.value}' is not available in this posed version "
            f"(available: {', '.join(list_engines())})"
        )
    if importlib.util.find_spec(spec.requires) is None:
        raise EngineUnavailableError(
            f"engine '{eng.value}' needs {spec.requires}: {spec.install_hint()}"
        )
    return importlib.import_module(spec.module)


def _provides(spec: BackendSpec, name: str, backend: ModuleType | None = None) -> Any:
    """The attribute ``name`` of an engine (backend module or tool module), or None."""
    if name in spec.tools:
        module, _, attr = spec.tools[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    return getattr(backend or importlib.import_module(spec.module), name, None)


def capability(engine: "str | Engine", name: str) -> Any:
    """The function (or class) implementing capability ``name`` of ``engine``.

    Raises:
        EngineUnavailableError: the engine's framework is not installed (with the install hint).
        CapabilityError: the engine cannot do ``name`` (names the engines that can).
    """
    eng = Engine.parse(engine)
    fn = _provides(_REGISTRY[eng], name, get_backend(eng))
    if fn is None:
        able = [e.value for e, s in _REGISTRY.items()
                if importlib.util.find_spec(s.requires)
                and (name in s.tools or _provides(s, name) is not None)]
        raise CapabilityError(
            f"engine '{eng.value}' cannot {name.replace('_', ' ')}"
            + (f" (engines that can: {', '.join(able)})" if able else "")
        )
    return fn


def resolve_engine(engine: "str | Engine | None" = None, project: "Project | None" = None) -> Engine:
    """The engine to use: the argument, else the project's ``engine`` key, else the default."""
    if engine is not None:
        return Engine.parse(engine)
    if project is not None and project.engine:
        try:
            return Engine.parse(project.engine)
        except ConfigError as exc:
            raise ConfigError(f"{project.config_path}: key 'engine': {exc}") from None
    return DEFAULT_ENGINE
