"""Import DeepLabCut 3 (PyTorch engine) exported models as posed bundles.

``deeplabcut.export_model`` writes ``DLC_<Task>_<net>_iteration-<i>_shuffle-<k>_snapshot-<n>.pt``:
a ``torch.save`` dict with ``config`` (the shuffle's whole ``pytorch_config`` as plain data) and
``pose`` (the ``PoseModel`` state dict), the file DeepLabCut-Live loads. The file is read with
``torch.load(weights_only=True)`` only, so a file that would need arbitrary Python objects
unpickled (and could run code doing so) is refused, never executed.

What is supported, and how it maps onto :class:`~posed.engines.pytorch.model.PoseNet`:

- ``method: bu`` with at most one individual, no unique body parts and no identity head
  (DeepLabCut's single-animal models).
- Backbone ``type: ResNet``: DeepLabCut builds ``timm.create_model(model_name,
  output_stride=...)`` and uses ``forward_features``; for timm's ``resnet`` family that is the
  last stage that ``features_only`` returns, so ``backbone.model.*`` loads into posed's backbone
  unchanged. DeepLabCut 3 has no MobileNet pose backbone (MobileNet appears only in its object
  detectors), and ``DLCRNet``, ``HRNet``, ``CSPNeXt`` and the conditional backbones add layers
  posed does not have.
- One head, ``bodypart``, of ``type: HeatmapHead`` with one ``ConvTranspose2d(kernel 3,
  stride 2)`` each for heatmap and locref. DeepLabCut's layer has no padding (a (2h+1)×(2w+1)
  grid) and decodes cell ``i`` at ``(i + 0.5) * stride``, so bundles use the head
  ``deconv3x3s2_nopad`` and posed's shared decoder gives DeepLabCut's pixels exactly.
- Predictor ``HeatmapPredictor``: ``apply_sigmoid`` -> score ``sigmoid``, else ``clip_scores``
  -> score ``clip``; without location refinement the locref layer is zeroed (offsets 0).
- Inference preprocessing: ``normalize_images`` (ImageNet mean/std on 0..1) and
  ``scale_to_unit_range`` in any combination (all are a per-channel affine map); colour mode
  RGB. Resizing, padding, cropping and other inference transforms are refused.

Scorer: ``posed.engines.project.posetables.scorer_name(net_type, Task + date, shuffle, snapshot)``,
e.g. ``posed_Resnet50_openfieldOct30shuffle1_snapshot_1``. Task, shuffle and snapshot come from
the export's file name; the date ("Oct30") from ``metadata.project_path``, whose folder name
DeepLabCut makes as ``<Task>-<experimenter>-<YYYY-MM-DD>``. Without a project path (newer
DeepLabCut wipes it on export) the date is left out (``openfieldshuffle1``); a renamed file
gives ``posed_<Net>_<file stem>``. DeepLabCut's own scorer for the same model (``DLC_...``) is
kept as ``source.dlc_scorer``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from posed.engines.bundle import IMAGENET_MEAN, IMAGENET_STD, ModelBundle, sha256_file
from posed.engines.project.posetables import camel_net as _camel_net, scorer_name
from posed.engines.io import atomic_path
from posed.errors import ExportError, ModelLoadError, reason
from posed.exporters.common import unsupported as _unsupported

__all__ = ["export_dlc_live", "import_dlc_pytorch", "import_dlc_snapshot", "publish_dlc_snapshot",
           "read_dlc_export", "read_dlc_snapshot"]

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
HEAD = "deconv3x3s2_nopad"

# DeepLabCut net_type -> posed net name, where posed knows the same network.
_POSED_NETS = {"resnet_50": "resnet_50", "resnet_18": "resnet_18"}

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# DLC_<Task>_<net>_iteration-<i>_shuffle-<k>[_snapshot-detector<uid>]_snapshot-<uid>.pt
_FILE_RE = re.compile(
    r"^DLC_(?P<task_net>.+)_iteration-(?P<iteration>\d+)_shuffle-(?P<shuffle>\d+)"
    r"(?:_snapshot-detector.+?)?_snapshot-(?P<snapshot>[^_]+)\.pt$"
)
# <Task>-<experimenter>-<YYYY-MM-DD>
_PROJECT_RE = re.compile(r"^(?P<rest>.+)-(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})$")

# Inference transforms that only change pixel values in ways posed's normalisation expresses.
_PIXEL_TRANSFORMS = ("normalize_images", "scale_to_unit_range")
# Inference transforms posed reproduces in other ways (padding: engines/padding.py).
# top_down_crop: the crop of top-down models (exporters/dlc_topdown.py); no other model reads it.
_OTHER_TRANSFORMS = ("auto_padding", "top_down_crop")

_BACKBONE_PREFIX = "backbone.model."
_HEAD_PREFIX = "heads.bodypart."


def read_dlc_export(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a DeepLabCut 3 exported ``.pt`` without unpickling arbitrary objects.

    Args:
        path: The file ``deeplabcut.export_model`` wrote.

    Returns:
        ``(config, state_dict)``: the ``pytorch_config`` dict and the pose model's tensors.

    Raises:
        ModelLoadError: the file is missing, truncated or corrupt, would need arbitrary Python
            objects unpickled, or lacks ``config``/``pose``.
    """
    config, pose, _ = _read_export(Path(path))
    return config, pose


def _read_export(path: Path) -> tuple[dict, dict[str, torch.Tensor], Any]:
    """:func:`read_dlc_export` plus the export's ``detector`` state dict (None without one:
    only top-down models have a detector)."""
    data = _load_plain(path)
    if not isinstance(data, Mapping):
        raise ModelLoadError(f"{path}: not a DeepLabCut export (expected a dict with 'config' "
                             f"and 'pose', found {type(data).__name__})")
    for key in ("config", "pose"):
        if key not in data:
            raise ModelLoadError(f"{path}: missing key '{key}' (not a DeepLabCut 3 exported model)")
    config, pose = data["config"], data["pose"]
    if not isinstance(config, Mapping):
        raise ModelLoadError(f"{path}: key 'config' is not a mapping")
    if not isinstance(pose, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in pose.items()):
        raise ModelLoadError(f"{path}: key 'pose' is not a state dict of named tensors")
    return dict(config), dict(pose), data.get("detector")


def _load_plain(path: Path) -> Any:
    """``torch.load`` of tensors and plain containers only; a refusal or damage is one line."""
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        # weights_only: tensors and plain containers only; anything else is refused by torch
        # before it is constructed, so a malicious pickle cannot run code here.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/pickle/zip report damage with many exception types
        text = str(exc)
        if "Weights only load failed" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" (it asks to unpickle {found.group(1)})" if found else ""
            raise ModelLoadError(f"{path}: refused: not a plain weights file{what}") from None
        first = " ".join(text.split()).split(". ")[0][:160]
        reason = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise ModelLoadError(f"{path}: cannot read: truncated or corrupt file ({reason})") from None


def read_dlc_snapshot(pose_cfg: str | Path, snapshot: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A DeepLabCut 3 training snapshot (``snapshot-NNN.pt``) and its shuffle's
    ``pytorch_config.yaml`` as ``(config, state_dict)``, like :func:`read_dlc_export`.

    A snapshot is ``{"model": state_dict, "metadata": ..., ["optimizer": ...]}``; only
    ``model`` is used.
    """
    from posed.engines.bundle import read_yaml_mapping

    pose_cfg, snapshot = Path(pose_cfg), Path(snapshot)
    config = read_yaml_mapping(pose_cfg)
    data = _load_plain(snapshot)
    model = data.get("model") if isinstance(data, Mapping) else None
    if not isinstance(model, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise ModelLoadError(f"{snapshot}: key 'model' is not a state dict of named tensors "
                             "(not a DeepLabCut 3 snapshot)")
    return dict(config), dict(model)


def import_dlc_pytorch(path: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Convert a DeepLabCut 3 exported model into a posed bundle directory.

    The weights are checked against the architecture (every tensor, strictly) before anything
    is written; ``model.safetensors`` is written first and ``posed.yaml`` last, each atomically.

    Args:
        path: DeepLabCut's exported ``.pt`` file.
        out: Bundle directory to create.
        overwrite: Replace the bundle files in an existing non-empty ``out``.

    Returns:
        ``out``.

    Raises:
        ModelLoadError: unreadable or refused file, missing config key, or a model posed does
            not support yet (the message says which part).
        ExportError: ``out`` exists, is not empty, and ``overwrite`` is false.
    """
    path, out = Path(path), Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: already exists and is not empty (pass overwrite to replace it)")

    config, pose, detector = _read_export(path)
    spec = _model_spec(config, path)
    return _write_bundle(spec, _map_state_dict(pose, spec, path), path, out,
                         _source(config, path, spec), detector=detector)


def import_dlc_snapshot(pose_cfg: str | Path, snapshot: str | Path, out: str | Path, *,
                        source: Mapping[str, Any], detector: str | Path | None = None) -> Path:
    """A DeepLabCut 3 shuffle's training snapshot as a posed bundle in ``out`` (which must not
    exist or be empty): the model a shuffle folder serves in place.

    ``source`` is the bundle's provenance (DeepLabCut's scorer, project, shuffle, snapshot),
    which the caller knows from the shuffle's folder; the same checks as
    :func:`import_dlc_pytorch` apply. ``detector`` is a top-down shuffle's detector snapshot
    (``snapshot-detector-NNN.pt``).
    """
    snapshot = Path(snapshot)
    config, pose = read_dlc_snapshot(pose_cfg, snapshot)
    detector_state = read_dlc_snapshot(pose_cfg, detector)[1] if detector else None
    spec = _model_spec(config, Path(pose_cfg))
    state = _map_state_dict(pose, spec, snapshot)
    provenance = {"imported_from": "deeplabcut", "file": snapshot.name,
                  "sha256": sha256_file(snapshot), "dlc_method": str(config.get("method")),
                  "dlc_net_type": spec["net_type"], **source}
    if detector:
        provenance["detector_sha256"] = sha256_file(Path(detector))
    return _write_bundle(spec, state, snapshot, Path(out), provenance, detector=detector_state)


def _write_bundle(spec: dict[str, Any], state: dict[str, torch.Tensor], path: Path, out: Path,
                  source: dict[str, Any], detector: Any = None) -> Path:
    """Check ``state`` (and a top-down model's ``detector`` state dict, DeepLabCut's keys)
    against the architecture strictly, then write the bundle atomically."""
    from safetensors.torch import save_file

    bundle = ModelBundle(
        engine="pytorch", format="safetensors", bodyparts=spec["bodyparts"],
        architecture=spec["architecture"], stride=spec["stride"],
        locref_stdev=spec["locref_stdev"], mean=spec["mean"], std=spec["std"], source=source,
    )
    topdown = "topdown" in spec["architecture"]
    if topdown and detector is None:
        raise ModelLoadError(f"{path}: a top-down model without its detector (export it with "
                             "the detector, or give the detector snapshot)")
    if spec["architecture"].get("head") == "rtmcc":
        from posed.engines.pytorch.rtmpose import build_model
    elif "individuals" in spec["architecture"] and not topdown:
        from posed.engines.pytorch.multianimal import build_model
    else:
        from posed.engines.pytorch.backend import build_model
    try:
        model = build_model(bundle)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{path}: {reason(exc)}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ModelLoadError(f"{path}: weights do not fit "
                             f"{spec['architecture'].get('timm_model', spec['net_type'])} "
                             f"({detail[:300]})") from None

    out.mkdir(parents=True, exist_ok=True)
    # Save what the model holds (float32, contiguous), exactly what the runner will load.
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"imported_from": "deeplabcut", "file": path.name})
    files = [WEIGHTS_FILE]
    if topdown:
        from posed.exporters.dlc_topdown import DETECTOR_FILE, map_detector_state, save_detector

        save_detector(spec, map_detector_state(detector, path), path, out)
        files.append(DETECTOR_FILE)
    bundle.save(out, files)
    log.info("imported %s -> %s (%s)", path.name, out, bundle.scorer)
    return out


# ----------------------------------------------------------------------------- config


def _get(config: Mapping, dotted: str, path: Path) -> Any:
    """``config[a][b]...`` for ``dotted = "a.b..."``; a missing key names itself."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ModelLoadError(f"{path}: config lacks key '{dotted}'")
        node = node[part]
    return node


def _model_spec(config: Mapping, path: Path) -> dict[str, Any]:
    """Check that posed can run the model and collect the bundle's settings."""
    method = str(_get(config, "method", path)).lower()
    if method not in ("bu", "td"):
        kind = {"ctd": "conditional top-down"}.get(method, f"method '{method}'")
        raise _unsupported(path, f"{kind} models (method '{method}')")
    bodyparts = _get(config, "metadata.bodyparts", path)
    if not (isinstance(bodyparts, list) and bodyparts
            and all(isinstance(b, str) for b in bodyparts)):
        raise ModelLoadError(f"{path}: config key 'metadata.bodyparts' is not a list of names")
    model_cfg = _get(config, "model", path)
    if model_cfg.get("neck"):
        raise _unsupported(path, f"a neck ({model_cfg['neck'].get('type', '?')})")
    head = (model_cfg.get("heads") or {}).get("bodypart") or {}
    if method == "td" and head.get("type") == "RTMCCHead":
        from posed.exporters.dlc_topdown import rtmpose_spec

        mean, std = _normalisation(config, path)
        return rtmpose_spec(config, head, path, {
            "bodyparts": list(bodyparts), "mean": mean, "std": std,
            "net_type": str(config.get("net_type") or "rtmpose")}, _normalisation)
    timm_model, output_stride = _backbone(config, path)

    heads = _get(config, "model.heads", path)
    extra = sorted(set(heads) - {"bodypart"})
    if extra:
        raise _unsupported(path, f"head '{extra[0]}'")
    head = _get(config, "model.heads.bodypart", path)
    htype = str(head.get("type"))
    mean, std = _normalisation(config, path)
    net_type = str(config.get("net_type") or f"dlc_{timm_model}")
    arch = {"net": _POSED_NETS.get(net_type, net_type), "timm_model": timm_model,
            "output_stride": output_stride}
    pad = _padding(config, path)
    if pad:
        arch["pad"] = pad
    common = {"bodyparts": list(bodyparts), "output_stride": output_stride, "mean": mean,
              "std": std, "net_type": net_type, "architecture": arch}
    if method == "td":
        from posed.exporters.dlc_topdown import topdown_spec

        return topdown_spec(config, head, path, common, _normalisation)
    if htype == "DLCRNetHead":
        from posed.exporters.dlc_paf import paf_spec

        return paf_spec(config, head, path, common)
    if htype != "HeatmapHead":
        raise _unsupported(path, f"head type '{htype}'")
    metadata = config["metadata"]
    individuals = metadata.get("individuals") or []
    if len(individuals) > 1:
        raise _unsupported(path, f"multi-animal models with a {htype} "
                                 f"({len(individuals)} individuals)")
    if metadata.get("unique_bodyparts"):
        raise _unsupported(path, "unique body parts")
    if metadata.get("with_identity"):
        raise _unsupported(path, "identity heads")
    k = len(bodyparts)
    _check_deconv(_get(config, "model.heads.bodypart.heatmap_config", path), "heatmap", k, path)
    predictor = _get(config, "model.heads.bodypart.predictor", path)
    if predictor.get("type", "HeatmapPredictor") != "HeatmapPredictor":
        raise _unsupported(path, f"predictor '{predictor.get('type')}'")
    locref_cfg = head.get("locref_config")
    # DeepLabCut's predictor defaults: apply_sigmoid True, clip_scores False, locref True.
    location_refinement = (bool(predictor.get("location_refinement", True))
                           and locref_cfg is not None)
    if locref_cfg is not None:
        _check_deconv(locref_cfg, "locref", 2 * k, path)
    if predictor.get("apply_sigmoid", True):
        score = "sigmoid"
    elif predictor.get("clip_scores", False):
        score = "clip"
    else:
        raise _unsupported(path, "unbounded heatmap scores (neither apply_sigmoid nor clip_scores)")
    return {
        "bodyparts": list(bodyparts),
        "architecture": {**arch, "score": score, "head": HEAD},
        "stride": output_stride / 2,
        "locref_stdev": float(predictor.get("locref_std", 7.2801)),
        "location_refinement": location_refinement,
        "has_locref_layer": locref_cfg is not None,
        "mean": mean,
        "std": std,
        "net_type": net_type,
    }


def _backbone(config: Mapping, path: Path) -> tuple[str, int]:
    """The timm model and output stride of a ResNet or HRNet backbone posed can build."""
    import timm.models

    backbone = _get(config, "model.backbone", path)
    btype = str(backbone.get("type"))
    timm_model = str(_get(config, "model.backbone.model_name", path))
    if btype == "HRNet":
        if not timm.models.is_model_in_modules(timm_model, ["hrnet"]):
            raise _unsupported(path, f"HRNet backbone model_name '{timm_model}' "
                                     "(not a timm HRNet)")
        for flag, what in (("interpolate_branches", "all branches interpolated (DEKR)"),
                           ("increased_channel_count", "increased_channel_count")):
            if backbone.get(flag):
                raise _unsupported(path, f"HRNet with {what}")
        return timm_model, 4  # the high-resolution branch
    if btype != "ResNet":
        raise _unsupported(path, f"backbone type '{btype}'")
    if not timm.models.is_model_in_modules(timm_model, ["resnet"]):
        raise _unsupported(path, f"ResNet backbone model_name '{timm_model}' (not a timm ResNet)")
    output_stride = int(backbone.get("output_stride", 32))  # DeepLabCut's ResNet default
    if output_stride not in (8, 16, 32):
        raise _unsupported(path, f"backbone output_stride {output_stride}")
    return timm_model, output_stride


def _padding(config: Mapping, path: Path) -> dict[str, Any] | None:
    """DeepLabCut's inference ``auto_padding`` as a bundle ``pad`` spec, or None."""
    from posed.engines.padding import check_pad
    from posed.errors import ConfigError

    spec = ((config.get("data") or {}).get("inference") or {}).get("auto_padding")
    if not spec:
        return None
    try:
        return check_pad(dict(spec), "data.inference.auto_padding")
    except ConfigError as exc:
        raise _unsupported(path, str(exc)) from None


def _check_deconv(cfg: Mapping, name: str, out_channels: int, path: Path) -> None:
    """Accept only the single 3x3 stride-2 transposed convolution posed's head has."""
    if cfg.get("final_conv"):
        raise _unsupported(path, f"HeatmapHead {name}_config with a final_conv")
    kernels, strides = list(cfg.get("kernel_size") or []), list(cfg.get("strides") or [])
    channels = list(cfg.get("channels") or [])
    if len(kernels) != 1:
        raise _unsupported(path, f"{len(kernels)} deconvolution layers in HeatmapHead "
                                 f"{name}_config")
    if kernels[0] != 3 or strides != [2]:
        raise _unsupported(path, f"HeatmapHead {name}_config kernel {kernels[0]} stride {strides}")
    if len(channels) != 2 or channels[1] != out_channels:
        raise ModelLoadError(f"{path}: HeatmapHead {name}_config channels {channels} do not "
                             f"match {out_channels} output maps")


def _normalisation(config: Mapping, path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std on the 0..1 scale equal to DeepLabCut's inference pixel transforms.

    DeepLabCut feeds float(pixels) through ``A.Normalize`` ((x/255 - m) / s) and then
    ``ScaleToUnitRange`` (x / 255), each optional; posed computes (x/255 - mean) / std.
    """
    colormode = str((config.get("data") or {}).get("colormode") or "RGB").upper()
    if colormode != "RGB":
        raise _unsupported(path, f"colour mode '{colormode}'")
    inference = _get(config, "data.inference", path) or {}
    other = [key for key, value in inference.items()
             if value and key not in _PIXEL_TRANSFORMS + _OTHER_TRANSFORMS]
    if other:
        raise _unsupported(path, f"inference transform '{other[0]}'")
    if inference.get("normalize_images"):
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0 / 255.0,) * 3
    if inference.get("scale_to_unit_range"):
        std = tuple(s * 255.0 for s in std)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _map_state_dict(pose: Mapping[str, torch.Tensor], spec: dict[str, Any],
                    path: Path) -> dict[str, torch.Tensor]:
    """DeepLabCut ``PoseModel`` keys -> ``PoseNet`` keys (checked strictly by the caller)."""
    if spec["architecture"].get("head") == "dlcrnet":
        from posed.exporters.dlc_paf import map_paf_state

        return map_paf_state(pose, path, _BACKBONE_PREFIX)
    if spec["architecture"].get("head") == "rtmcc":
        from posed.exporters.common import rename_dlc_state

        # CSPNeXt is DeepLabCut's own module (no timm ``model.`` level)
        return rename_dlc_state(pose, path, "backbone.", _HEAD_PREFIX, {"": "head."})
    if "topdown" in spec["architecture"]:
        from posed.exporters.dlc_topdown import map_topdown_state

        return map_topdown_state(pose, path, _BACKBONE_PREFIX)
    heads = {f"{_HEAD_PREFIX}heatmap_head.deconv_layers.0.": "heatmap."}
    if spec["has_locref_layer"]:
        heads[f"{_HEAD_PREFIX}locref_head.deconv_layers.0."] = "locref."
    state: dict[str, torch.Tensor] = {}
    for key, tensor in pose.items():
        if key.startswith(_BACKBONE_PREFIX):
            state["backbone." + key[len(_BACKBONE_PREFIX):]] = tensor
            continue
        for prefix, target in heads.items():
            if key.startswith(prefix):
                state[target + key[len(prefix):]] = tensor
                break
        else:
            raise ModelLoadError(f"{path}: unexpected tensor '{key}' in 'pose'")
    if not spec["location_refinement"]:
        # DeepLabCut then decodes cell centres only: zero offsets do exactly that.
        weight = state.get("heatmap.weight")
        if weight is None:
            raise ModelLoadError(f"{path}: 'pose' lacks "
                                 f"'{_HEAD_PREFIX}heatmap_head.deconv_layers.0.weight'")
        k = len(spec["bodyparts"])
        state["locref.weight"] = weight.new_zeros((weight.shape[0], 2 * k, *weight.shape[2:]))
        state["locref.bias"] = weight.new_zeros(2 * k)
    return state


# ----------------------------------------------------------------------------- provenance


def _dlc_date(project_path: Any) -> str | None:
    """DeepLabCut's project ``date`` ("Oct30") from its folder name, if it has one."""
    if not project_path:
        return None
    found = _PROJECT_RE.match(Path(str(project_path).rstrip("/\\")).name)
    if not found or not 1 <= int(found["month"]) <= 12:
        return None
    return f"{_MONTHS[int(found['month']) - 1]}{int(found['day'])}"


def _task_from_file(task_net: str, net_type: str) -> str | None:
    """Split ``<Task>_<net>`` of the file name; the net is written as given or as an enum."""
    for net in (net_type, f"NetType.{net_type.upper()}"):
        if task_net.endswith("_" + net) and len(task_net) > len(net) + 1:
            return task_net[: -len(net) - 1]
    return None


def _source(config: Mapping, path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    net_type = spec["net_type"]
    source: dict[str, Any] = {
        "imported_from": "deeplabcut",
        "file": path.name,
        "sha256": sha256_file(path),
        "dlc_method": str(config.get("method")),
        "dlc_net_type": net_type,
    }
    metadata = config.get("metadata") or {}
    date = _dlc_date(metadata.get("project_path"))
    found = _FILE_RE.match(path.name)
    task = _task_from_file(found["task_net"], net_type) if found else None
    if found and task:
        shuffle, snapshot = int(found["shuffle"]), found["snapshot"]
        # Kept as text where an int would change it ("best-200", "050").
        snap: int | str = snapshot
        if snapshot.isdigit() and str(int(snapshot)) == snapshot:
            snap = int(snapshot)
        scorer = scorer_name(net_type, task + (date or ""), shuffle, snap)
        source.update(task=task, iteration=int(found["iteration"]), shuffle=shuffle,
                      snapshot=snap, scorer=scorer, dlc_scorer="DLC" + scorer[len("posed"):])
        if date:
            source["date"] = date
    else:
        stem = re.sub(r"[^A-Za-z0-9]+", "", path.stem) or "model"
        source["scorer"] = f"posed_{_camel_net(net_type) or 'Model'}_{stem}"
    pcutoff = ((config.get("inference") or {}).get("eval") or {}).get("pcutoff")
    if isinstance(pcutoff, (int, float)):
        source["pcutoff"] = float(pcutoff)
    return source


# ----------------------------------------------------------------------------- DeepLabCut-Live

_WIPED = (("metadata", "project_path"), ("metadata", "pose_config_path"),
          ("train_settings", "weight_init"), ("resume_training_from",))


def export_dlc_live(pose_cfg: str | Path, snapshot: str | Path, out: str | Path, *,
                    wipepaths: bool = False, detector: str | Path | None = None) -> Path:
    """The file DeepLabCut-Live loads for a DeepLabCut 3 shuffle's snapshot: ``torch.save`` of
    ``{"config": <pytorch_config as plain data>, "pose": <state dict>}``, as DeepLabCut's
    ``export_model`` writes it (``wipepaths`` blanks the machine paths in the config); a
    top-down model's ``detector`` snapshot adds ``"detector": <its state dict>``.

    The snapshot's tensors are copied unchanged; the model is checked to be one posed runs.
    """
    config, pose = read_dlc_snapshot(pose_cfg, snapshot)
    _model_spec(config, Path(pose_cfg))
    if wipepaths:
        for keys in _WIPED:
            node = config
            for key in keys[:-1]:
                node = node.get(key) if isinstance(node, dict) else None
            if isinstance(node, dict) and keys[-1] in node:
                node[keys[-1]] = None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save({"config": config, "pose": pose, **(
            {"detector": read_dlc_snapshot(pose_cfg, detector)[1]} if detector else {})}, tmp)
    return out


def publish_dlc_snapshot(weights: str | Path, out: str | Path, epoch: int) -> Path:
    """A posed snapshot of a DeepLabCut-architecture net (``dlc_resnet_50``) as DeepLabCut's
    ``snapshot-NNN.pt``: ``{"model": state dict with DeepLabCut's keys, "metadata":
    {"epoch": N}}``, the inverse of the key mapping the import uses."""
    from safetensors.torch import load_file

    heads = {"heatmap.": f"{_HEAD_PREFIX}heatmap_head.deconv_layers.0.",
             "locref.": f"{_HEAD_PREFIX}locref_head.deconv_layers.0."}
    state = {}
    for key, tensor in load_file(str(weights)).items():
        if key.startswith("backbone."):
            state[_BACKBONE_PREFIX + key[len("backbone."):]] = tensor
        elif key[: key.index(".") + 1] in heads:
            prefix = key[: key.index(".") + 1]
            state[heads[prefix] + key[len(prefix):]] = tensor
        else:
            raise ExportError(f"{weights}: tensor '{key}' has no DeepLabCut counterpart")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save({"model": state, "metadata": {"epoch": int(epoch)}}, tmp)
    return out
