"""Model bundles: a directory with ``posed.yaml`` describing the weights beside it.

A bundle is everything an engine needs to run a model without the training project:
body parts, architecture, input normalisation, decoding constants, the source of the
model, and the sha256 of each weights file. Loading verifies the format version and every
hash, so a truncated or swapped file is refused with a clear error instead of producing
wrong poses. No bundle file is ever a pickle.

A PyTorch training folder is itself a bundle: after each snapshot, training rewrites
``posed.yaml`` to describe the newest snapshot, so ``posed analyze <train folder>`` works.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

import posed
from posed.errors import ModelLoadError, reason

BUNDLE_FILE = "posed.yaml"
FORMAT_VERSION = 1

# ImageNet statistics on the 0..1 scale: timm and Keras backbones are trained with them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelBundle:
    """Description of an exported or trained model.

    Attributes:
        engine: Engine that runs the weights (``pytorch``, ``tensorflow``, ``onnx``).
        format: Weights format (``safetensors``, ``torchscript``, ``onnx``, ``savedmodel``).
        bodyparts: Keypoint names, in output order.
        architecture: Network description (``net``, ``backbone_stride``, head settings).
        stride: Input pixels per output grid cell.
        locref_stdev: Scale of location-refinement offsets.
        mean: Per-channel mean on the 0..1 scale, subtracted from RGB input.
        std: Per-channel standard deviation on the 0..1 scale.
        weights: Weights files, each ``{"name": ..., "sha256": ...}``; the first is the main one.
        input_size: ``[height, width]`` the weights only accept, or ``None`` for any size
            (frames of another size must then be resized by the caller).
        source: Where the model came from (project, shuffle, snapshot, scorer, ...).
        export: How the weights were exported (options, opset, measured parity), if they were.
        body_window: Half-size in pixels of the square around one animal's body that decoding
            reads every part in (:func:`posed.engines.decoding.decode`); fitted to the labels
            by posed's single-animal training, None for imported models (plain argmax).
        path: Bundle directory (not stored in the file).
    """

    engine: str
    format: str
    bodyparts: list[str]
    architecture: dict[str, Any]
    stride: float
    locref_stdev: float
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights: list[dict[str, str]] = field(default_factory=list)
    input_size: list[int] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    body_window: float | None = None
    created: str = ""
    posed_version: str = posed.__version__
    format_version: int = FORMAT_VERSION
    path: Path | None = None

    @property
    def weights_path(self) -> Path:
        """Absolute path of the main weights file."""
        if self.path is None or not self.weights:
            raise ModelLoadError("bundle has no weights file")
        return self.path / self.weights[0]["name"]

    @property
    def scorer(self) -> str:
        """DeepLabCut scorer name recorded at training time (or a generic one)."""
        return str(self.source.get("scorer") or f"posed_{self.architecture.get('net', 'model')}")

    def to_dict(self) -> dict[str, Any]:
        """The content of ``posed.yaml``."""
        data = asdict(self)
        data.pop("path")
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    def save(self, directory: str | Path, weight_files: list[str | Path]) -> Path:
        """Hash ``weight_files`` (relative to ``directory``) and write ``posed.yaml`` atomically."""
        from posed.engines.io import atomic_write_text

        directory = Path(directory)
        self.weights = [
            {"name": str(Path(w)), "sha256": sha256_file(directory / w)} for w in weight_files
        ]
        self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.posed_version = posed.__version__
        self.path = directory
        atomic_write_text(directory / BUNDLE_FILE, yaml.safe_dump(self.to_dict(), sort_keys=False))
        return directory / BUNDLE_FILE


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping; anything else is a one-line :class:`ModelLoadError`."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{path}: invalid YAML ({reason(exc)})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: cannot read ({reason(exc)})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path}: expected a mapping")
    return data


_REQUIRED = ("format_version", "engine", "format", "bodyparts", "stride", "weights")


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a directory holding ``posed.yaml``."""
    return (Path(path) / BUNDLE_FILE).is_file()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fields(data: dict[str, Any], meta_file: Path) -> None:
    """Types of ``posed.yaml`` values, so a damaged file is a one-line error naming the key."""
    def bad(key: str, want: str) -> ModelLoadError:
        value = data[key]
        shown = type(value).__name__ if isinstance(value, (dict, list)) else repr(value)
        return ModelLoadError(f"{meta_file}: key '{key}' must be {want} (got {shown})")

    for key in ("engine", "format"):
        if not isinstance(data[key], str):
            raise bad(key, "a string")
    parts = data["bodyparts"]
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str) for p in parts):
        raise bad("bodyparts", "a non-empty list of names")
    for key in ("stride", "locref_stdev"):
        if key in data and not (_is_number(data[key]) and data[key] > 0):
            raise bad(key, "a positive number")
    for key in ("mean", "std"):
        value = data.get(key)
        if key in data and not (isinstance(value, list) and len(value) == 3
                                and all(_is_number(v) for v in value)):
            raise bad(key, "a list of 3 numbers")
    for key in ("architecture", "source", "export"):
        if key in data and not isinstance(data[key], dict):
            raise bad(key, "a mapping")
    window = data.get("body_window")
    if window is not None and not (_is_number(window) and window > 0):
        raise bad("body_window", "null or a positive number of pixels")
    size = data.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and v > 0 for v in size)):
        raise bad("input_size", "null or [height, width]")
    if not isinstance(data["weights"], list):
        raise bad("weights", "a list of {name, sha256}")
    for i, entry in enumerate(data["weights"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) \
                or not isinstance(entry.get("sha256"), str):
            raise ModelLoadError(f"{meta_file}: weights[{i}] must have a 'name' and a 'sha256'")
        name = Path(entry["name"])
        # Weights live inside the bundle: a name must not make posed read files elsewhere.
        if name.is_absolute() or ".." in name.parts or not name.parts:
            raise ModelLoadError(f"{meta_file}: weights[{i}] name '{entry['name']}' is not a "
                                 "file inside the bundle")


def _check_inside(directory: Path, weights: list[dict[str, Any]], meta_file: Path) -> None:
    """Refuse a weights file that is a link leading out of the bundle (SECURITY.md: bundle
    files stay inside the bundle, whatever the names say after links are followed)."""
    root = directory.resolve()
    for entry in weights:
        wfile = directory / entry["name"]
        if wfile.exists() and not wfile.resolve().is_relative_to(root):
            raise ModelLoadError(f"{wfile}: links outside the bundle; copy the file into it")


def load_bundle(path: str | Path, verify: bool = True) -> ModelBundle:
    """Read a bundle directory and (by default) verify every weights file's sha256.

    Raises:
        ModelLoadError: ``posed.yaml`` missing or malformed, unknown format version, a
            weights file missing or with a different hash.
    """
    directory = Path(path)
    if directory.is_file() and directory.name == BUNDLE_FILE:
        directory = directory.parent
    meta_file = directory / BUNDLE_FILE
    if not meta_file.is_file():
        raise ModelLoadError(f"{directory}: not a model bundle (no {BUNDLE_FILE})")
    data = read_yaml_mapping(meta_file)
    for key in _REQUIRED:
        if key not in data:
            raise ModelLoadError(f"{meta_file}: missing key '{key}'")
    version = data["format_version"]
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise ModelLoadError(
            f"{meta_file}: written by a newer posed ({data.get('posed_version', '?')}, "
            f"format_version {version}); this posed {posed.__version__} reads format_version "
            f"{FORMAT_VERSION}: upgrade posed")
    if version != FORMAT_VERSION:
        raise ModelLoadError(
            f"{meta_file}: format_version {data['format_version']!r} is not supported "
            f"(this posed reads version {FORMAT_VERSION})"
        )
    known = {f for f in ModelBundle.__dataclass_fields__} - {"path"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ModelLoadError(f"{meta_file}: unknown key '{unknown[0]}'")
    if not data["weights"]:
        raise ModelLoadError(f"{meta_file}: 'weights' is empty")
    _check_fields(data, meta_file)
    data.setdefault("architecture", {})
    data.setdefault("locref_stdev", 7.2801)
    for key in ("mean", "std"):
        if key in data:
            data[key] = tuple(float(v) for v in data[key])
    bundle = ModelBundle(**data, path=directory)
    _check_inside(directory, bundle.weights, meta_file)
    if verify:
        for entry in bundle.weights:
            wfile = directory / entry["name"]
            if not wfile.is_file():
                raise ModelLoadError(f"{wfile}: weights file missing (listed in {meta_file})")
            actual = sha256_file(wfile)
            if actual != entry.get("sha256"):
                raise ModelLoadError(
                    f"{wfile}: sha256 mismatch (file is corrupt or was replaced; "
                    f"expected {str(entry.get('sha256'))[:12]}…, got {actual[:12]}…)"
                )
    return bundle
