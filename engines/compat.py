"""DeepLabCut's compat API over posed's engines: a DeepLabCut user's script runs unchanged.

Every public function of ``deeplabcut.compat`` (DeepLabCut 3.0.x), and its
``create_training_dataset``, with DeepLabCut's parameter names, order and defaults; each
takes a project's ``config.yaml`` (str or Path) and returns what DeepLabCut returns. They
share posed's implementation (:mod:`posed.engines.api`): a shuffle DeepLabCut trained is
served in place (:mod:`posed.engines.dlc`), with DeepLabCut's scorer and output names.

A parameter posed does not act on is accepted with one warning when it changes no output,
or refused with one line when it would (:mod:`posed.engines.dlc.params`); renamed parameters
are accepted under both names. posed's own options ride in DeepLabCut's ``**torch_kwargs``
where a function has them (``snapshot``, ``layout``, ``workers``, ``cluster``, ``progress``,
``allow_truncated``, ``tracking``, ``runner_options``).

    import posed.engines.compat as deeplabcut
    deeplabcut.analyze_videos(config, ["v.mp4"], shuffle=1, save_as_csv=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from posed.engines import api
from posed.engines.dlc import params
from posed.engines.dlc.params import no_effect, refuse, renamed
from posed.engines.registry import Engine
from posed.errors import CapabilityError, DataError

__all__ = [
    "Engine", "analyze_images", "analyze_time_lapse_frames", "analyze_videos",
    "convert_detections2tracklets", "create_training_dataset", "create_tracking_dataset",
    "evaluate_network", "export_model", "extract_maps", "extract_save_all_maps",
    "get_available_aug_methods", "get_project_engine", "return_evaluate_network_data",
    "return_train_network_path", "train_network", "visualize_locrefs", "visualize_paf",
    "visualize_scoremaps",
]

_TF_ONLY = "a TensorFlow setting; posed's PyTorch and ONNX engines have no such switch"
_ORDER = "the order videos are processed in changes no output"
_MULTI = ("posed tracks multi-animal models with its own tracker into the project's "
          "individuals (analyze_videos' tracking= option: stitch, online or none)")
_ANALYZE_OPTIONS = ("device", "snapshot_index", "detector_snapshot_index", "snapshot", "layout",
                    "workers", "cluster", "progress", "allow_truncated", "tracking",
                    "runner_options")


# ----------------------------------------------------------------------------- engines

def get_project_engine(cfg: dict) -> Engine:
    """The engine of a project config (a dict, as DeepLabCut's ``read_config`` returns):
    its ``engine`` key, else PyTorch."""
    value = cfg.get("engine") if isinstance(cfg, dict) else None
    return Engine.parse(value) if value is not None else Engine.PYTORCH


def get_available_aug_methods(engine: "Engine | str") -> tuple[str, ...]:
    """The augmentation methods of an engine, the default first (DeepLabCut's values)."""
    eng = Engine.parse(engine)
    if eng is Engine.PYTORCH:
        return ("albumentations",)
    if eng is Engine.TENSORFLOW:
        return ("imgaug", "default", "deterministic", "scalecrop", "tensorpack")
    raise RuntimeError(f"engine '{eng.value}' has no augmentation methods")


# ----------------------------------------------------------------------------- shared


def _project(config: "str | Path") -> Any:
    from posed.engines.project import load_project

    return load_project(config)


def _dlc_choice(trainingsetindex: int, modelprefix: str, snapshot_index: Any = None,
                detector_snapshot_index: Any = None) -> dict:
    return {"trainingsetindex": trainingsetindex, "modelprefix": modelprefix or "",
            "snapshot_index": snapshot_index, "detector_snapshot_index": detector_snapshot_index}


def _bundle(config: Any, shuffle: int, engine: Any, trainingsetindex: int, modelprefix: str,
            options: dict) -> Any:
    """The model a DeepLabCut call names: DeepLabCut's shuffle when the project has one."""
    return api.resolve_bundle(
        config, _engine(engine), shuffle=shuffle, snapshot=options.pop("snapshot", None),
        layout=options.pop("layout", None),
        **_dlc_choice(trainingsetindex, modelprefix, options.pop("snapshot_index", None),
                      options.pop("detector_snapshot_index", None)))


def _engine(engine: Any) -> Any:
    return None if engine is None else Engine.parse(engine)


def _device(function: str, gputouse: Any, device: Any) -> dict:
    """DeepLabCut's ``gputouse=N`` is ``device="cuda:N"``; ``device`` wins when both are set."""
    if device is not None:
        return {"device": str(device)}
    if gputouse is not None:
        if not isinstance(gputouse, int) or isinstance(gputouse, bool) or gputouse < 0:
            raise TypeError(f"{function}(): gputouse must be a GPU number, got {gputouse!r}")
        return {"device": f"cuda:{gputouse}"}
    return {}


def _videos(videos: Any, extensions: Any) -> list[Path]:
    """DeepLabCut's video list: files as given; folders expanded to files with the extensions
    (all video types when None)."""
    from posed.engines.offline.analyze import VIDEO_SUFFIXES, expand_inputs

    if isinstance(videos, (str, Path)):
        videos = [videos]
    if isinstance(extensions, str):
        extensions = [extensions] if extensions else None
    suffixes = tuple(("." + e.lstrip(".")).lower() for e in extensions) if extensions else VIDEO_SUFFIXES
    return expand_inputs([str(v) for v in videos], suffixes)


def _check(report: Any) -> None:
    """A run that lost a video raises (DeepLabCut raises too); nothing is lost silently."""
    if report.failed:
        first = report.failed[0][1]
        more = f" (and {len(report.failed) - 1} more)" if len(report.failed) > 1 else ""
        raise DataError(f"{first}{more}")
    if not report.ok:
        path, message = report.truncated[0]
        raise DataError(f"{message} (pass allow_truncated=True to accept truncated videos)")


# ----------------------------------------------------------------------------- datasets

def create_training_dataset(config: "str | Path", num_shuffles: int = 1, Shuffles: Any = None,
                            windows2linux: bool = False, userfeedback: bool = True,
                            trainIndices: Any = None, testIndices: Any = None,
                            net_type: str | None = None, detector_type: str | None = None,
                            augmenter_type: str | None = None, posecfg_template: Any = None,
                            superanimal_name: str = "", weight_init: Any = None,
                            engine: Any = None, ctd_conditions: Any = None) -> list:
    """DeepLabCut's ``create_training_dataset``: one train/test split per shuffle.

    The split is posed's, or DeepLabCut's own when the project already has it (see
    :func:`posed.engines.dlc.split.read_dlc_split`); ``trainIndices``/``testIndices`` are
    positions in DeepLabCut's order of the labelled images (sorted by folder, then image).
    ``net_type`` and ``engine`` are remembered for :func:`train_network`.

    Returns:
        ``[(train_fraction, shuffle, (train_indices, test_indices)), ...]`` as DeepLabCut.
    """
    from posed.engines.dlc.datasets import create_shuffles

    fn = "create_training_dataset"
    no_effect(fn, windows2linux=(windows2linux, False, "paths are stored portably"),
              userfeedback=(userfeedback, True, "posed never asks; an existing split is reused"),
              augmenter_type=(augmenter_type, None, "posed's augmentation is set at training"))
    refuse(fn, detector_type=(detector_type, None, "posed does not train top-down models yet "
                              "(it runs DeepLabCut-trained ones)"),
           posecfg_template=(posecfg_template, None, "posed trains from its own settings"),
           superanimal_name=(superanimal_name, "", "SuperAnimal models are not available"),
           weight_init=(weight_init, None, "pass pretrained weights to posed train"),
           ctd_conditions=(ctd_conditions, None, "conditional top-down is not supported"))
    return create_shuffles(_project(config), num_shuffles, Shuffles, trainIndices, testIndices,
                           net_type=net_type, engine=_engine(engine))


def create_tracking_dataset(config: "str | Path", videos: Sequence, track_method: str,
                            video_extensions: Any = None, shuffle: int = 1,
                            trainingsetindex: int = 0, gputouse: Any = None,
                            destfolder: Any = None, batch_size: int | None = None,
                            cropping: Any = None, TFGPUinference: bool = True,
                            modelprefix: str = "", robust_nframes: bool = False,
                            n_triplets: int = 1000, engine: Any = None, **kwargs: Any) -> str:
    """Appearance samples of a multi-animal model's tracklets for re-identification
    (:func:`posed.engines.api.create_tracking_dataset`); returns the scorer."""
    fn = "create_tracking_dataset"
    video_extensions = renamed(fn, kwargs, "videotype", "video_extensions", video_extensions)
    batch_size = renamed(fn, kwargs, "batchsize", "batch_size", batch_size)
    params.take_options(fn, kwargs, ())
    no_effect(fn, TFGPUinference=(TFGPUinference, True, _TF_ONLY),
              robust_nframes=(robust_nframes, False, "posed always counts decoded frames"),
              n_triplets=(n_triplets, 1000, "posed samples every tracked detection"))
    refuse(fn, cropping=(cropping, None, "cropping is not supported for tracking datasets"))
    bundle = _bundle(config, shuffle, engine, trainingsetindex, modelprefix, {})
    out = None if destfolder is None else Path(destfolder) / "tracking_dataset.npz"
    api.create_tracking_dataset(bundle, _videos(videos, video_extensions), tracker=track_method
                                or "ellipse", batch_size=batch_size or 8, out=out,
                                runner_options=_device(fn, gputouse, None))
    return bundle.scorer


# ----------------------------------------------------------------------------- training


def train_network(config: "str | Path", shuffle: int = 1, trainingsetindex: int = 0,
                  max_snapshots_to_keep: int | None = None, display_iters: int | None = None,
                  save_iters: int | None = None, max_iters: int | None = None,
                  epochs: int | None = None, save_epochs: int | None = None,
                  allow_growth: bool = True, gputouse: Any = None, autotune: bool = False,
                  keepdeconvweights: bool = True, modelprefix: str = "",
                  superanimal_name: str = "", superanimal_transfer_learning: bool = False,
                  engine: Any = None, device: str | None = None, snapshot_path: Any = None,
                  detector_path: Any = None, batch_size: int | None = None,
                  detector_batch_size: int | None = None, detector_epochs: int | None = None,
                  detector_save_epochs: int | None = None, pose_threshold: float = 0.1,
                  pytorch_cfg_updates: dict | None = None, **kwargs: Any) -> None:
    """Train a shuffle with posed (the split is created first when missing); returns None."""
    fn = "train_network"
    max_iters = renamed(fn, kwargs, "maxiters", "max_iters", max_iters)
    save_iters = renamed(fn, kwargs, "saveiters", "save_iters", save_iters)
    display_iters = renamed(fn, kwargs, "displayiters", "display_iters", display_iters)
    params.take_options(fn, kwargs, ())
    no_effect(fn, display_iters=(display_iters, None, "posed logs once per epoch"),
              allow_growth=(allow_growth, True, _TF_ONLY), autotune=(autotune, False, _TF_ONLY),
              max_snapshots_to_keep=(max_snapshots_to_keep, None, "posed keeps every snapshot"),
              pose_threshold=(pose_threshold, 0.1, "a top-down setting"))
    refuse(fn, max_iters=(max_iters, None, "TensorFlow iterations; pass epochs"),
           save_iters=(save_iters, None, "TensorFlow iterations; pass save_epochs"),
           keepdeconvweights=(keepdeconvweights, True, "posed has no TensorFlow init"),
           modelprefix=(modelprefix, "", "posed trains into its own model folder"),
           superanimal_name=(superanimal_name, "", "SuperAnimal models are not available"),
           superanimal_transfer_learning=(superanimal_transfer_learning, False,
                                          "SuperAnimal models are not available"),
           snapshot_path=(snapshot_path, None, "pass pretrained weights to posed train"),
           detector_path=(detector_path, None, "posed does not train top-down models yet "
                          "(it runs DeepLabCut-trained ones)"),
           detector_batch_size=(detector_batch_size, None, "no detector"),
           detector_epochs=(detector_epochs, None, "no detector"),
           detector_save_epochs=(detector_save_epochs, None, "no detector"),
           pytorch_cfg_updates=(pytorch_cfg_updates, None, "pass posed's training settings"))
    no_effect(fn, gputouse=(gputouse, None, "posed trains on the CPU"),
              device=(device, None, "posed trains on the CPU"))
    _train(_project(config), shuffle, trainingsetindex, _engine(engine), epochs, batch_size,
           save_epochs)


def _train(project: Any, shuffle: int, trainingsetindex: int, engine: Any, epochs: Any,
           batch_size: Any, save_epochs: Any) -> None:
    """posed's training of a shuffle; a shuffle in DeepLabCut's layout whose model posed
    trains (DeepLabCut's resnet_50) gets posed's snapshots in DeepLabCut's format too."""
    from posed.engines.dlc.datasets import shuffle_settings
    from posed.engines.dlc.layout import find_shuffle
    from posed.engines.dlc.roundtrip import posed_net, publish

    _single_fraction(project, trainingsetindex)
    settings = shuffle_settings(project, shuffle)
    found = find_shuffle(project, shuffle, engine=Engine.PYTORCH)
    net = posed_net(found) if found is not None else None
    if found is not None:
        if net is None:
            raise CapabilityError(f"train_network: {found.pose_cfg}: posed does not train this "
                                  "DeepLabCut model (it trains resnet_50 in DeepLabCut's layout)")
        if found.snapshots():
            raise CapabilityError(f"train_network: {found.train_dir} already has snapshots; "
                                  "posed trains a new shuffle (create_training_dataset)")
    overrides = {k: v for k, v in (("net", net or settings.get("net_type")), ("epochs", epochs),
                                   ("batch_size", batch_size), ("save_every", save_epochs))
                 if v is not None}
    folder = api.train_network(project, shuffle, engine or settings.get("engine"), overrides,
                               progress=True)
    if found is not None:
        publish(found, folder)


def _single_fraction(project: Any, trainingsetindex: int) -> None:
    """posed keeps one split per shuffle, made with the first TrainingFraction."""
    if trainingsetindex != 0:
        raise CapabilityError(f"{project.config_path}: trainingsetindex={trainingsetindex!r}: "
                              "posed trains one split per shuffle, with TrainingFraction[0]")


def return_train_network_path(config: "str | Path", shuffle: int = 1, trainingsetindex: int = 0,
                              modelprefix: str = "", engine: Any = None) -> tuple[Path, Path, Path]:
    """``(train/<model config>, test/pose_cfg.yaml, train/)`` of a shuffle in DeepLabCut's
    layout, absolute, whether or not they exist (DeepLabCut's rule)."""
    from posed.engines.dlc.layout import model_folder, train_fraction

    project = _project(config)
    eng = _engine(engine) or get_project_engine(project.raw)
    folder = model_folder(project, shuffle, train_fraction(project, trainingsetindex), eng,
                          modelprefix)
    return folder / "train" / eng.pose_cfg_name, folder / "test" / "pose_cfg.yaml", folder / "train"


# ----------------------------------------------------------------------------- evaluation


def evaluate_network(config: "str | Path", shuffles: Sequence[int] = (1,),
                     trainingsetindex: Any = 0, plotting: bool = False, show_errors: bool = True,
                     comparison_bodyparts: Any = "all", gputouse: Any = None,
                     rescale: bool = False, modelprefix: str = "",
                     per_keypoint_evaluation: bool = False, snapshots_to_evaluate: Any = None,
                     pcutoff: float | None = None, engine: Any = None,
                     **torch_kwargs: Any) -> None:
    """Evaluate shuffles on their train and test images; prints the results, returns None."""
    fn = "evaluate_network"
    shuffles = renamed(fn, torch_kwargs, "Shuffles", "shuffles", shuffles, (1,))
    comparison_bodyparts = renamed(fn, torch_kwargs, "comparisonbodyparts",
                                   "comparison_bodyparts", comparison_bodyparts, "all")
    options = params.take_options(fn, torch_kwargs, ("device", "snapshotindex", "snapshot",
                                                     "layout"))
    no_effect(fn, per_keypoint_evaluation=(per_keypoint_evaluation, False,
                                           "posed always reports every body part"))
    refuse(fn, comparison_bodyparts=(comparison_bodyparts, "all", "posed evaluates all parts"),
           rescale=(rescale, False, "posed evaluates at the labelled size"),
           snapshots_to_evaluate=(snapshots_to_evaluate, None, "pass snapshotindex or snapshot"))
    device = _device(fn, gputouse, options.pop("device", None))
    for shuffle in ([shuffles] if isinstance(shuffles, int) else list(shuffles)):
        result = api.evaluate_network(
            config, shuffle, _engine(engine), snapshot=options.get("snapshot"),
            layout=options.get("layout"), runner_options=device, pcutoff=pcutoff,
            plots=plotting, dlc=_dlc_choice(trainingsetindex, modelprefix,
                                            options.get("snapshotindex")))
        if show_errors:
            print(f"Evaluation of shuffle {shuffle} ({result.folder}):")
            print(result.format())


def return_evaluate_network_data(config: "str | Path", shuffle: int = 0, trainingsetindex: int = 0,
                                 comparison_bodyparts: Any = "all", snapshotindex: Any = None,
                                 rescale: bool = False, fulldata: bool = False,
                                 show_errors: bool = True, modelprefix: str = "",
                                 returnjustfns: bool = True, engine: Any = None) -> Any:
    """DeepLabCut 3 has this for TensorFlow shuffles only (PyTorch raises
    NotImplementedError); posed has no TensorFlow evaluation data files either."""
    raise NotImplementedError("return_evaluate_network_data: DeepLabCut 3 implements it for "
                              "TensorFlow shuffles only; use evaluate_network's files")


# ----------------------------------------------------------------------------- analysis

def analyze_videos(config: "str | Path", videos: Sequence, video_extensions: Any = None,
                   shuffle: int = 1, trainingsetindex: int = 0, gputouse: Any = None,
                   save_as_csv: bool = False, in_random_order: bool = True,
                   destfolder: Any = None, batch_size: int | None = None, cropping: Any = None,
                   TFGPUinference: bool = True, dynamic: tuple = (False, 0.5, 10),
                   modelprefix: str = "", robust_nframes: bool = False,
                   allow_growth: bool = False, use_shelve: bool = False, auto_track: bool = True,
                   n_tracks: int | None = None, animal_names: Any = None, calibrate: bool = False,
                   identity_only: bool = False, use_openvino: Any = None, engine: Any = None,
                   overwrite: bool = False, **torch_kwargs: Any) -> str:
    """Analyse videos into DeepLabCut's files; returns the scorer, as DeepLabCut does.

    ``cropping`` ``[x1, x2, y1, y2]`` (else the project's ``cropping: true`` with ``x1`` ...
    ``y2``, as DeepLabCut reads its config) analyses that part of each frame; keypoints are in
    the cropped frame's pixels and the crop is recorded in ``_meta.pickle``, as DeepLabCut.
    ``dynamic`` ``(True, pcutoff, margin)`` is dynamic cropping (:mod:`posed.engines.dynamic`).

    A video that fails (or is truncated, unless ``allow_truncated=True``) raises
    :class:`~posed.errors.DataError` after the others are written.
    """
    fn = "analyze_videos"
    video_extensions = renamed(fn, torch_kwargs, "videotype", "video_extensions", video_extensions)
    batch_size = renamed(fn, torch_kwargs, "batchsize", "batch_size", batch_size)
    options = params.take_options(fn, torch_kwargs, _ANALYZE_OPTIONS)
    no_effect(fn, in_random_order=(in_random_order, True, _ORDER),
              TFGPUinference=(TFGPUinference, True, _TF_ONLY),
              allow_growth=(allow_growth, False, _TF_ONLY),
              use_shelve=(use_shelve, False, "posed keeps no per-frame pickle"),
              robust_nframes=(robust_nframes, False, "posed always counts decoded frames"))
    refuse(fn, use_openvino=(bool(use_openvino), False, "posed's OpenVINO engine runs ONNX exports "
                             "(posed export --format onnx, then engine 'openvino')"),
           n_tracks=(n_tracks, None, _MULTI), animal_names=(animal_names, None, _MULTI),
           calibrate=(calibrate, False, _MULTI), identity_only=(identity_only, False, _MULTI))
    if not auto_track and options.get("tracking") is None:
        options["tracking"] = {"identities": "none"}
    runner = {**(options.pop("runner_options", None) or {}),
              **_device(fn, gputouse, options.pop("device", None))}
    bundle = _bundle(config, shuffle, engine, trainingsetindex, modelprefix, options)
    project = _project(config)
    if cropping is None and project.raw.get("cropping"):  # DeepLabCut's config crop
        cropping = [project.raw.get(k) for k in ("x1", "x2", "y1", "y2")]
    report = api.analyze_videos(bundle, _videos(videos, video_extensions), _engine(engine),
                                runner_options=runner, dest=destfolder, csv=save_as_csv,
                                batch_size=batch_size or project.batch_size,
                                overwrite=overwrite, crop=cropping, dynamic=dynamic, **options)
    _check(report)
    return bundle.scorer


def analyze_images(config: "str | Path", images: Any, frame_type: str | None = None,
                   destfolder: Any = None, shuffle: int = 1, trainingsetindex: int = 0,
                   max_individuals: int | None = None, device: str | None = None,
                   snapshot_index: Any = None, detector_snapshot_index: Any = None,
                   save_as_csv: bool = False, modelprefix: str = "", plotting: bool = False,
                   pcutoff: float | None = None, bbox_pcutoff: float | None = None,
                   plot_skeleton: bool = False, **torch_kwargs: Any) -> dict[str, Any]:
    """Poses for images (files or folders, ``frame_type`` their extension); one table per
    folder. Returns DeepLabCut's ``{image path: {"bodyparts": (1, K, 3) array of x, y,
    likelihood}}`` (one individual)."""
    from posed.engines.offline.analyze import IMAGE_SUFFIXES, expand_inputs

    fn = "analyze_images"
    options = params.take_options(fn, torch_kwargs, ("snapshot", "layout", "progress"))
    refuse(fn, max_individuals=(max_individuals, None, _MULTI),
           detector_snapshot_index=(detector_snapshot_index, None,
                                    "analyze_images runs single-animal models"),
           plotting=(plotting, False, "plot with posed's labelled-video tools"),
           bbox_pcutoff=(bbox_pcutoff, None, "analyze_images runs single-animal models"))
    no_effect(fn, pcutoff=(pcutoff, None, "used only for plotting"),
              plot_skeleton=(plot_skeleton, False, "used only for plotting"))
    suffixes = (("." + frame_type.lstrip(".")).lower(),) if frame_type else IMAGE_SUFFIXES
    paths = expand_inputs([images] if isinstance(images, (str, Path)) else list(images), suffixes)
    bundle = _bundle(config, shuffle, None, trainingsetindex, modelprefix,
                     {**options, "snapshot_index": snapshot_index})
    report = api.analyze_images(bundle, paths, runner_options=_device(fn, None, device),
                                dest=destfolder, csv=save_as_csv,
                                progress=options.get("progress", True))
    _check(report)
    poses = _image_poses(report.outputs)
    if bundle.source.get("layout") == "deeplabcut" and poses:
        from posed.engines.dlc.meta import write_image_predictions

        folder = Path(destfolder) if destfolder is not None else Path(next(iter(poses))).parent
        write_image_predictions(bundle, poses, folder, csv=save_as_csv)
    return poses


def _image_poses(tables: list[Path]) -> dict[str, Any]:
    from posed.engines.project.posetables import read_pose_table

    poses: dict[str, Any] = {}
    for h5 in tables:
        df = read_pose_table(h5)
        values = df.to_numpy(dtype="float32").reshape(len(df), 1, -1, 3)
        poses.update((str(i), {"bodyparts": v}) for i, v in zip(df.index, values))
    return poses


def analyze_time_lapse_frames(config: "str | Path", directory: "str | Path",
                              frametype: str = ".png", shuffle: int = 1,
                              trainingsetindex: int = 0, gputouse: Any = None,
                              device: str | None = None, save_as_csv: bool = False,
                              modelprefix: str = "", engine: Any = None) -> dict[str, Any]:
    """The images of ``directory`` (``frametype`` files), as :func:`analyze_images` with the
    output in ``directory``."""
    return analyze_images(config, directory, frame_type=frametype, destfolder=directory,
                          shuffle=shuffle, trainingsetindex=trainingsetindex,
                          device=_device("analyze_time_lapse_frames", gputouse, device).get("device"),
                          save_as_csv=save_as_csv, modelprefix=modelprefix)


def convert_detections2tracklets(config: "str | Path", videos: Sequence, video_extensions: Any = None,
                                 shuffle: int = 1, trainingsetindex: int = 0,
                                 overwrite: bool = False, destfolder: Any = None,
                                 ignore_bodyparts: Any = None, inferencecfg: Any = None,
                                 modelprefix: str = "", greedy: bool = False,
                                 calibrate: bool = False, window_size: int = 0,
                                 identity_only: bool = False, track_method: str = "",
                                 engine: Any = None, **kwargs: Any) -> None:
    """DeepLabCut's step from detections to tracklets. posed's ``analyze_videos`` assembles
    (DeepLabCut's assembler for DeepLabCut's models) and tracks multi-animal models itself
    and writes no detection pickles, so this is refused."""
    raise CapabilityError("convert_detections2tracklets: posed writes no detection pickles; "
                          + _MULTI)


# ----------------------------------------------------------------------------- maps, export


def extract_maps(config: "str | Path", shuffle: int = 0, trainingsetindex: int = 0,
                 gputouse: Any = None, device: str | None = None, rescale: bool = False,
                 Indices: Any = None, modelprefix: str = "", engine: Any = None) -> dict:
    """Score maps and location refinement of the labelled images (PyTorch engine), in
    DeepLabCut's structure (:func:`posed.engines.dlc.maps.extract_maps`)."""
    from posed.engines.dlc.maps import extract_maps as _extract

    refuse("extract_maps", rescale=(rescale, False, "maps are at the labelled size"))
    return _extract(_project(config), shuffle, trainingsetindex, Indices, modelprefix,
                    _engine(engine), _device("extract_maps", gputouse, device))


def extract_save_all_maps(config: "str | Path", shuffle: int = 1, trainingsetindex: int = 0,
                          comparison_bodyparts: Any = "all", extract_paf: bool = True,
                          all_paf_in_one: bool = True, gputouse: Any = None,
                          device: str | None = None, rescale: bool = False, Indices: Any = None,
                          modelprefix: str = "", dest_folder: Any = None,
                          snapshot_index: Any = None, detector_snapshot_index: Any = None,
                          engine: Any = None, **kwargs: Any) -> None:
    """:func:`extract_maps`, saved as PNGs (score maps and location refinement over each
    image) in the shuffle's ``evaluation-results-pytorch/.../maps/`` or ``dest_folder``."""
    from posed.engines.dlc.maps import extract_maps as _extract
    from posed.engines.dlc.maps import save_all_maps

    fn = "extract_save_all_maps"
    comparison_bodyparts = renamed(fn, kwargs, "comparisonbodyparts", "comparison_bodyparts",
                                   comparison_bodyparts, "all")
    params.take_options(fn, kwargs, ())
    no_effect(fn, extract_paf=(extract_paf, True, "heatmap models have no PAF maps"),
              all_paf_in_one=(all_paf_in_one, True, "heatmap models have no PAF maps"))
    refuse(fn, rescale=(rescale, False, "maps are at the labelled size"),
           detector_snapshot_index=(detector_snapshot_index, None, "no detector"))
    project = _project(config)
    maps = _extract(project, shuffle, trainingsetindex, Indices, modelprefix, _engine(engine),
                    _device(fn, gputouse, device), snapshot_index)
    save_all_maps(maps, project, shuffle, comparison_bodyparts, dest_folder)


def export_model(cfg_path: "str | Path", shuffle: int = 1, trainingsetindex: int = 0,
                 snapshotindex: Any = None, iteration: int | None = None,
                 TFGPUinference: bool = True, overwrite: bool = False, make_tar: bool = True,
                 wipepaths: bool = False, without_detector: bool = False, modelprefix: str = "",
                 engine: Any = None) -> None:
    """The ``.pt`` DeepLabCut-Live loads, in DeepLabCut's ``exported-models-pytorch/``
    (:func:`posed.engines.dlc.export.export_dlc_live`); returns None as DeepLabCut."""
    from posed.engines.dlc.export import export_dlc_live

    fn = "export_model"
    no_effect(fn, TFGPUinference=(TFGPUinference, True, _TF_ONLY),
              make_tar=(make_tar, True, "a PyTorch export is one file"))
    project = _project(cfg_path)
    export_dlc_live(project, shuffle, trainingsetindex, snapshotindex, iteration, overwrite,
                    wipepaths, modelprefix, _engine(engine), without_detector=without_detector)


# ----------------------------------------------------------------------------- visualisation

def visualize_scoremaps(image: Any, scmap: Any) -> tuple:
    """An image with a score map over it; returns ``(figure, axes)`` (matplotlib)."""
    from posed.engines.dlc.maps import show_scoremap

    return show_scoremap(image, scmap)


def visualize_locrefs(image: Any, scmap: Any, locref_x: Any, locref_y: Any, step: int = 5,
                      zoom_width: int = 0) -> tuple:
    """Location-refinement vectors over a score map; returns ``(figure, axes)``."""
    from posed.engines.dlc.maps import show_locrefs

    return show_locrefs(image, scmap, locref_x, locref_y, step, zoom_width)


def visualize_paf(image: Any, paf: Any, step: int = 5, colors: Any = None) -> tuple:
    """Part-affinity fields as arrows; returns ``(figure, axes)``."""
    from posed.engines.dlc.maps import show_paf

    return show_paf(image, paf, step, colors)
