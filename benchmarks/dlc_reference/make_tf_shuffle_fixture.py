"""Make, with DeepLabCut 3.0.2's TensorFlow engine, a fixture of a TensorFlow shuffle.

Run with a DeepLabCut 3.0.2 environment that has its ``tf`` extra (it pins numpy<2):

    python3.11 -m venv /work/dlctf && /work/dlctf/bin/pip install "deeplabcut[tf]==3.0.2" \
        "numpy<2" "tensorflow==2.15.1" tf-slim "torch==2.14.1" "torchvision==0.29.1"
    /work/dlctf/bin/python benchmarks/dlc_reference/make_tf_shuffle_fixture.py \
        [--posed .venv/bin/posed] [--out tests/data/deeplabcut/tf_shuffle_fixture]

A ResNet-50 checkpoint is 94 MB, too large to commit, so the snapshot's weights are a
deterministic function of their names and shapes (``seeded_weights.py`` in the fixture, shared
with the test, numpy's frozen ``RandomState`` stream). The fixture keeps what DeepLabCut wrote
and computed; the test writes the checkpoint again from ``variables.json`` and compares.

Steps:

1. ``posed synth WORK/synth --frames 20 --video-frames 12 --size 80x64 --seed 3 -q``
   (80×64: width and height differ, so a transposed axis shows).
2. ``deeplabcut.create_training_dataset(config, Shuffles=[1], net_type="resnet_50",
   engine=Engine.TF, userfeedback=False)``. It would download ImageNet weights for training,
   which this offline machine cannot and the fixture never uses: an empty
   ``resnet_v1_50.ckpt.placeholder`` in DeepLabCut's ``pretrained/`` folder satisfies its check.
3. DeepLabCut's own test network (``PoseNetFactory.create(cfg).test``, as its
   ``predict.setup_pose_prediction`` builds it) gets the seeded weights, and TensorFlow's
   ``Saver`` writes ``train/snapshot-5`` (what DeepLabCut's training loop writes).
   ``variables.json`` lists the variables' names and shapes in DeepLabCut's graph.
4. ``deeplabcut.analyze_videos(config, [video], shuffle=1, save_as_csv=True)`` (TensorFlow
   engine, DeepLabCut's default ``TFGPUinference=True``).
5. ``deeplabcut.evaluate_network(config, Shuffles=[1])``.
6. The project goes to OUT without the checkpoint (build path replaced by
   ``__PROJECT_PATH__`` in text files), with ``check.json`` (versions, split, scorer, keypoints).
"""

from __future__ import annotations

import json
import pickle
import platform
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from fixture_common import (PLACEHOLDER, TEXT_SUFFIXES, capture, fixture_args,  # noqa: E402
                            load_seeded_weights, synth_project, tolist)

SYNTH_ARGS = ["--frames", "20", "--video-frames", "12", "--size", "80x64", "--seed", "3", "-q"]
ITERATIONS = 5
OUT = REPO / "tests" / "data" / "deeplabcut" / "tf_shuffle_fixture"


README = """# A DeepLabCut TensorFlow shuffle, analysed and evaluated by DeepLabCut 3.0.2

Made by `benchmarks/dlc_reference/make_tf_shuffle_fixture.py` (its docstring lists the steps),
in a DeepLabCut 3.0.2 environment with TensorFlow 2.15 (`check.json` has the versions).

- The project is synthetic, made by `posed synth` (no third-party data).
- DeepLabCut wrote `config.yaml`, `training-datasets/` and `dlc-models/.../{train,test}/pose_cfg.yaml`
  (`create_training_dataset`, engine TF, `resnet_50`).
- The snapshot `train/snapshot-5` is left out (94 MB). Its weights are `seeded_weights.value(name,
  shape)` for every variable of DeepLabCut's test network listed in `variables.json`; TensorFlow's
  `Saver` wrote them as DeepLabCut's training does. `tests/test_dlc_tf_shuffle.py` writes it again.
- DeepLabCut's outputs on that snapshot: `videos/synth1DLC_resnet50_synthJan1shuffle1_5.{h5,csv}`
  and `_meta.pickle` (`analyze_videos`), `evaluation-results/` (`evaluate_network`).
  posed never unpickles the `.pickle` files DeepLabCut wrote; `check.json` has what they hold.
- `__PROJECT_PATH__` stands for the build folder in text files.
"""


def seeded_weights():
    """The fixture's ``seeded_weights`` module (the one rule for the weights)."""
    return load_seeded_weights(OUT / "seeded_weights.py")


def write_snapshot(test_cfg: Path, train_dir: Path) -> list[dict]:
    """DeepLabCut's test network with the seeded weights, saved as its training would."""
    import tensorflow as tf

    from deeplabcut.pose_estimation_tensorflow.config import load_config
    from deeplabcut.pose_estimation_tensorflow.nnets.factory import PoseNetFactory

    cfg = load_config(str(test_cfg))
    tf.compat.v1.disable_eager_execution()
    tf.compat.v1.reset_default_graph()
    inputs = tf.compat.v1.placeholder(tf.float32, shape=[None, None, None, 3])
    PoseNetFactory.create(cfg).test(inputs)
    variables = tf.compat.v1.global_variables()
    rule = seeded_weights()
    with tf.compat.v1.Session() as sess:
        for v in variables:
            v.load(rule.value(v.op.name, v.shape.as_list()), sess)
        tf.compat.v1.train.Saver(variables).save(sess, str(train_dir / "snapshot"),
                                                 global_step=ITERATIONS)
    return [{"name": v.op.name, "shape": v.shape.as_list()} for v in variables]


def main() -> int:
    args = fixture_args(__doc__.splitlines()[0], OUT.name, "/tmp/posed-dlc-tf-fixture")
    t_start = time.perf_counter()
    work = args.workdir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    project = work / "synth"
    synth_project(args.posed, project, SYNTH_ARGS)
    config = project / "config.yaml"

    import pandas as pd
    import tensorflow as tf

    import deeplabcut
    from deeplabcut.utils import auxiliaryfunctions as af

    record: dict = {"python": platform.python_version(), "deeplabcut": deeplabcut.__version__,
                    "tensorflow": tf.__version__, "synth": ["posed", "synth", "PROJECT",
                                                            *SYNTH_ARGS]}
    pretrained = Path(deeplabcut.__file__).parent / "pose_estimation_tensorflow" / "models" \
        / "pretrained"
    if not any(pretrained.glob("resnet_v1_50.ckpt*")):
        (pretrained / "resnet_v1_50.ckpt.placeholder").write_bytes(b"")
    with capture():
        splits = deeplabcut.create_training_dataset(
            str(config), Shuffles=[1], net_type="resnet_50", engine=deeplabcut.Engine.TF,
            userfeedback=False)
    record["create_training_dataset"] = tolist(splits)
    cfg = af.read_config(str(config))
    folder = project / af.get_model_folder(cfg["TrainingFraction"][0], 1, cfg,
                                           engine=deeplabcut.Engine.TF)
    record["variables"] = write_snapshot(folder / "test" / "pose_cfg.yaml", folder / "train")
    (project / "variables.json").write_text(
        "[\n" + ",\n".join(json.dumps(v) for v in record["variables"]) + "\n]\n")

    video = project / "videos" / "synth1.mp4"
    with capture():
        scorer = deeplabcut.analyze_videos(str(config), [str(video)], shuffle=1,
                                           save_as_csv=True)
    df = pd.read_hdf(video.parent / f"synth1{scorer}.h5")
    record["analyze_videos"] = {"call": "deeplabcut.analyze_videos(config, [video], shuffle=1, "
                                        "save_as_csv=True)",
                                "scorer": scorer,
                                "keypoints": tolist(df.to_numpy().reshape(len(df), -1, 3))}
    # DeepLabCut's metadata pickle, read here in DeepLabCut's environment (posed never reads it)
    with (video.parent / f"synth1{scorer}_meta.pickle").open("rb") as f:
        meta = pickle.load(f)["data"]
    record["meta_keys"] = list(meta)
    record["meta_frame_dimensions"] = list(meta["frame_dimensions"])
    with capture() as out:
        deeplabcut.evaluate_network(str(config), Shuffles=[1])
    record["evaluate_network"] = {"call": "deeplabcut.evaluate_network(config, Shuffles=[1])",
                                  "output": out.getvalue().replace(str(project), PLACEHOLDER)[-3000:]}

    # the fixture: everything but the checkpoint, paths neutral
    rule = (OUT / "seeded_weights.py").read_text()
    shutil.rmtree(args.out, ignore_errors=True)
    for path in sorted(p for p in project.rglob("*") if p.is_file()):
        rel = path.relative_to(project)
        if path.name.startswith("snapshot-") or path.name == "checkpoint":
            continue
        dest = args.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in TEXT_SUFFIXES:
            dest.write_text(path.read_text().replace(str(project), PLACEHOLDER))
        else:
            shutil.copyfile(path, dest)
    (args.out / "seeded_weights.py").write_text(rule)
    (args.out / "README.md").write_text(README)
    record["seconds"] = round(time.perf_counter() - t_start, 1)
    (args.out / "check.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"fixture in {args.out}: scorer {scorer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
