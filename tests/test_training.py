"""Shared training pieces: augmentation geometry, targets on samples, schedules, settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import yaml

from posed.engines.training import AugmentConfig, SampleMaker, TrainConfig, lr_at, make_train_config
from posed.errors import ConfigError, DataError


def _dot_image(points, size=(96, 128)):
    img = np.zeros((*size, 3), np.uint8)
    for k, (x, y) in enumerate(points):
        img[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2, k % 3] = 255
    return img


@pytest.mark.parametrize("crop", [None, (64, 64)])
def test_augmented_keypoints_stay_on_the_pixels_they_label(crop):
    points = np.array([[40.0, 30.0], [90.0, 60.0], [60.0, 50.0]])
    cfg = TrainConfig(crop=crop, augment=AugmentConfig(rotation=40, scale=(0.7, 1.3), shift=0.1,
                                                       blur_prob=0.0, noise=0.0, brightness=0.0,
                                                       contrast=0.0))
    maker = SampleMaker([_dot_image(points)], [points], cfg, lambda h, w: (h // 4, w // 4), 4.0)
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(20):
        sample = maker.sample(0, rng)
        image = sample["image"]
        assert image.shape == ((64, 64, 3) if crop else (96, 128, 3))
        from posed.engines.decoding import decode

        kpts = decode(sample["heatmap"][None], sample["locref"][None], 4.0,
                      cfg.target.locref_stdev)[0]
        for k in range(3):
            if sample["heatmap_weight"][k, 0, 0] == 0:
                continue  # pushed out of the crop: marked missing
            x, y = kpts[k, :2]
            # The dot's colour channel is brightest where the target says the keypoint is.
            ys, xs = np.nonzero(image[..., k % 3] > 128)
            assert np.hypot(xs.mean() - x, ys.mean() - y) < 1.5
            checked += 1
    assert checked > 30


def test_photometric_augmentation_changes_pixels_not_geometry():
    points = np.array([[40.0, 30.0]])
    cfg = TrainConfig(augment=AugmentConfig(rotation=0, scale=(1, 1), shift=0, blur_prob=1.0,
                                            noise=0.05, brightness=0.2, contrast=0.2))
    maker = SampleMaker([_dot_image(points)], [points], cfg, lambda h, w: (h // 4, w // 4), 4.0)
    a = maker.sample(0, np.random.default_rng(0))
    b = maker.sample(0, np.random.default_rng(0), augment=False)
    assert not np.array_equal(a["image"], b["image"])
    np.testing.assert_allclose(a["heatmap"], b["heatmap"])


def test_cosine_schedule_warms_up_then_decays():
    cfg = TrainConfig(epochs=10, lr=1e-3, warmup_epochs=1.0)
    assert lr_at(cfg, 0.5) == pytest.approx(5e-4)
    assert lr_at(cfg, 1.0) == pytest.approx(1e-3)
    values = [lr_at(cfg, e) for e in np.linspace(1, 10, 20)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert lr_at(cfg, 10) == pytest.approx(1e-5)
    step = TrainConfig(epochs=10, lr=1.0, schedule="step")
    assert [lr_at(step, e) for e in (0, 6, 9)] == pytest.approx([1.0, 0.1, 0.01])


def test_settings_layers_and_errors():
    cfg = make_train_config([("defaults", {"net": "resnet_18", "epochs": 5}),
                             ("file.yaml", {"epochs": 7, "crop": [64, 48]}),
                             ("command line", {"epochs": None, "batch_size": 4})])
    assert (cfg.net, cfg.epochs, cfg.crop, cfg.batch_size) == ("resnet_18", 7, (64, 48), 4)
    with pytest.raises(ConfigError, match="file.yaml: key 'crop': expected"):
        make_train_config([("file.yaml", {"crop": [64]})])
    with pytest.raises(ConfigError, match="schedule 'linear'"):
        make_train_config([("x", {"schedule": "linear"})])
    with pytest.raises(ConfigError, match="file.yaml: key 'target': target kind 'box'"):
        make_train_config([("file.yaml", {"target": {"kind": "box"}})])
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        make_train_config([("x", {"epochs": 0})])


def test_recipe_follows_the_weights_and_every_setting_overrides_it(project_copy, caplog):
    """Random init gets the scratch recipe (rate, stride, a fixed number of steps turned
    into epochs); pretrained weights the fine-tuning defaults; the user's settings win."""
    import logging
    import math

    from posed.engines.project import create_split, load_project
    from posed.engines.training import resolve_train_config
    from posed.engines.training.settings import SCRATCH, SCRATCH_STEPS, recipe_settings

    name, settings, why = recipe_settings(TrainConfig(batch_size=8), 64)
    assert (name, why) == ("scratch", "no pretrained weights")
    assert settings == {**SCRATCH, "epochs": math.ceil(SCRATCH_STEPS / 8), "recipe": "scratch"}
    assert recipe_settings(TrainConfig(), 10_000)[1]["epochs"] == 30  # at least 30 epochs
    assert recipe_settings(TrainConfig(pretrained=True), 64)[:2] == ("finetune",
                                                                   {"recipe": "finetune"})
    assert recipe_settings(TrainConfig(recipe="finetune"), 64)[2] == "asked for"
    assert "output_stride" not in recipe_settings(TrainConfig(net="dlc_resnet_50"), 64)[1]
    with pytest.raises(ConfigError, match="recipe 'fast' is not one of auto, scratch, finetune"):
        make_train_config([("x", {"recipe": "fast"})])

    project = load_project(project_copy)
    split = create_split(project, 1)
    steps = math.ceil(len(split.train) / project.batch_size)
    with caplog.at_level(logging.INFO, "posed.engines.training.loop"):
        cfg = resolve_train_config(project, 1, None, "pytorch")
    assert (cfg.recipe, cfg.lr, cfg.output_stride) == ("scratch", 3e-3, 8)
    assert cfg.epochs == min(300, max(30, math.ceil(SCRATCH_STEPS / steps)))
    # The recipe's photometric strength; the synthetic animal is seen from above facing
    # every way, so the recipe rotates over the full circle; the other effects as defaulted.
    aug = cfg.augment
    assert (aug.brightness, aug.contrast, aug.noise, aug.invert_prob, aug.rotation) == (
        0.4, 0.5, 0.04, 0.15, 180.0)
    lines = [r.message for r in caplog.records if r.message.startswith("training recipe:")]
    assert len(lines) == 1
    assert "scratch (no pretrained weights; top-down view: label axes" in lines[0]
    assert "rotation up to 180 degrees" in lines[0]
    mine = resolve_train_config(project, 1, {"lr": 5e-4, "epochs": 3, "augment": {
        "brightness": 0.1, "rotation": 30}}, "pytorch")
    assert (mine.lr, mine.epochs, mine.output_stride) == (5e-4, 3, 8)
    assert (mine.augment.brightness, mine.augment.contrast) == (0.1, 0.5)  # key by key
    assert mine.augment.rotation == 30
    caplog.clear()
    with caplog.at_level(logging.INFO, "posed.engines.training.loop"):
        resolve_train_config(project, 1, {"budget_minutes": 2.5}, "pytorch")
    assert "epochs (fewer if they take over 2.5 min)" in caplog.text
    fine = resolve_train_config(project, 1, {"pretrained": "w.safetensors"}, "pytorch")
    assert (fine.recipe, fine.lr, fine.output_stride, fine.epochs) == ("finetune", 1e-3, 16, 50)
    assert (fine.augment.brightness, fine.augment.contrast) == (0.15, 0.2)


def _poses(headings_deg: np.ndarray, fixed_pair: bool = False) -> np.ndarray:
    """An animal of four parts (snout, ears, tail base) turned to each heading, placed at
    random; with ``fixed_pair``, two more parts that never move (a joystick)."""
    rng = np.random.default_rng(0)
    shape = np.array([[20.0, 0.0], [12.0, -5.0], [12.0, 5.0], [-20.0, 0.0]])
    out = []
    for h in np.radians(headings_deg):
        rot = np.array([[np.cos(h), -np.sin(h)], [np.sin(h), np.cos(h)]])
        pose = shape @ rot.T + rng.uniform(50, 450, 2)
        if fixed_pair:
            pose = np.vstack([pose, [[10.0, 10.0], [60.0, 10.0]]])
        out.append(pose)
    return np.array(out)


def test_axis_concentration_tells_a_top_down_view_from_a_fixed_one():
    """Labels facing every way read as top-down (full-circle rotation); headings within
    +-25 degrees, a line that never turns, or too few frames do not."""
    from posed.engines.training.settings import (TOPDOWN_AXIS, TOPDOWN_MIN_FRAMES,
                                                 axis_concentration, recipe_settings)

    every_way = axis_concentration(_poses(np.linspace(0, 360, 40, endpoint=False)))
    assert every_way < 0.05
    # openfield-like: headings over 240 degrees only, still top-down
    assert axis_concentration(_poses(np.linspace(-120, 120, 40))) < TOPDOWN_AXIS
    assert axis_concentration(_poses(np.linspace(-25, 25, 40))) > 0.85
    # a side view where the body tilts from level to upright (rearing) stays a side view
    assert axis_concentration(_poses(np.linspace(-90, 0, 40))) > TOPDOWN_AXIS
    # a side view walked both ways keeps one axis
    assert axis_concentration(_poses(np.tile([0.0, 180.0], 20))) == pytest.approx(1.0)
    assert axis_concentration(_poses(np.linspace(0, 360, 40), fixed_pair=True)) == (
        pytest.approx(1.0))
    few = _poses(np.linspace(0, 360, TOPDOWN_MIN_FRAMES - 1))
    assert axis_concentration(few) is None
    holes = _poses(np.linspace(0, 360, 40, endpoint=False))
    holes[::2, 0] = np.nan  # the snout unlabelled in half the frames: its pairs use the rest
    assert axis_concentration(holes) < 0.05

    top = recipe_settings(TrainConfig(batch_size=8), 64, (128, 128), 0.2)
    assert top[1]["augment"]["rotation"] == 180.0
    assert top[2] == "no pretrained weights; top-down view: label axes 0.20 < 0.55"
    assert top[1]["augment"]["invert_prob"] == 0.15  # the rest of the recipe's augmentation
    # Crops of large frames keep the plain rotation: on openfield's 320-px crops full turns
    # did not converge within the recipe's steps.
    for cfg, size in ((TrainConfig(batch_size=8), (640, 480)),
                      (TrainConfig(batch_size=8, crop=(96, 96)), (128, 128))):
        cropped = recipe_settings(cfg, 64, size, 0.2)
        assert "rotation" not in cropped[1]["augment"]
        assert cropped[2].endswith("top-down view: label axes 0.20 < 0.55, but crops keep the "
                                   "plain rotation")
    side = recipe_settings(TrainConfig(batch_size=8), 64, (128, 128), 0.95)
    assert "rotation" not in side[1]["augment"] and "top-down" not in side[2]
    fine = recipe_settings(TrainConfig(pretrained=True), 64, (128, 128), 0.2)
    assert fine[1] == {"recipe": "finetune"}  # measured from random init only


@settings(max_examples=40, deadline=None)
@given(st.floats(-np.pi, np.pi), st.floats(0.2, 5.0),
       st.lists(st.floats(-180, 180), min_size=10, max_size=40))
def test_axis_concentration_ignores_a_turn_of_the_camera(turn, zoom, headings):
    """Turning, zooming or mirroring every frame alike does not change the measure, which
    stays within [0, 1]."""
    from posed.engines.training.settings import axis_concentration

    kp = _poses(np.array(headings))
    rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    base = axis_concentration(kp)
    assert 0.0 <= base <= 1.0 + 1e-9
    assert axis_concentration(zoom * kp @ rot.T) == pytest.approx(base, abs=1e-9)
    assert axis_concentration(kp * [-1.0, 1.0]) == pytest.approx(base, abs=1e-9)


def test_scratch_recipe_crops_large_frames_and_trains_larger_inputs_longer():
    """1200 steps for small frames, 2800 for 320-px inputs (both measured), linear between;
    frames over 320 px on a side train on 320x320 crops unless the user sets a crop."""
    import math

    from posed.engines.training.settings import (SCRATCH_STEPS, SCRATCH_STEPS_LARGE,
                                                 recipe_settings, scratch_steps)

    assert (SCRATCH_STEPS, SCRATCH_STEPS_LARGE) == (1200, 2800)
    assert scratch_steps(64) == scratch_steps(128) == SCRATCH_STEPS
    assert scratch_steps(320) == scratch_steps(2000) == SCRATCH_STEPS_LARGE
    assert SCRATCH_STEPS < scratch_steps(224) == 2000 < SCRATCH_STEPS_LARGE
    # openfield: 88 training frames of 640x480 at batch 8 (11 steps an epoch)
    chosen = recipe_settings(TrainConfig(batch_size=8), 88, (640, 480))[1]
    assert chosen["crop"] == [320, 320] and chosen["epochs"] == math.ceil(2800 / 11) == 255
    mine = recipe_settings(TrainConfig(batch_size=8, crop=(160, 160)), 88, (640, 480))[1]
    assert "crop" not in mine and mine["epochs"] == math.ceil(scratch_steps(160) / 11)
    small = recipe_settings(TrainConfig(batch_size=8), 64, (128, 96))[1]
    assert "crop" not in small and small["epochs"] == 150
    assert recipe_settings(TrainConfig(batch_size=8), 64, None)[1]["epochs"] == 150
    assert "crop" not in recipe_settings(TrainConfig(pretrained=True), 88, (640, 480))[1]


@settings(max_examples=60, deadline=None)
@given(st.floats(1, 4000), st.floats(1, 4000))
def test_scratch_steps_stay_within_the_measured_range_and_grow_with_size(a, b):
    from posed.engines.training.settings import SCRATCH_STEPS, SCRATCH_STEPS_LARGE, scratch_steps

    lo, hi = sorted((a, b))
    assert SCRATCH_STEPS <= scratch_steps(lo) <= scratch_steps(hi) <= SCRATCH_STEPS_LARGE


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 400), st.floats(0.01, 600), st.floats(1e-3, 120))
def test_a_budget_keeps_the_epochs_that_fit_and_never_adds_any(epochs, budget, seconds):
    from posed.engines.training import budget_epochs

    cfg = TrainConfig(epochs=epochs, budget_minutes=budget)
    fit = budget_epochs(cfg, seconds)
    assert 1 <= fit <= epochs
    # Within the budget unless even one epoch exceeds it; one more epoch would not fit.
    assert fit * seconds <= budget * 60 + 1e-6 or fit == 1
    assert fit == epochs or (fit + 1) * seconds > budget * 60
    assert budget_epochs(TrainConfig(epochs=epochs), seconds) == epochs


def test_the_budget_paces_an_epoch_by_its_steps_after_the_first():
    from posed.engines.backend_common import StepClock

    now = iter([20.0, 21.0, 22.0, 23.0])  # ticks: a 20 s first step (tracing), then 1 s each
    clock = StepClock(timer=lambda: next(now))
    for _ in range(4):
        clock.tick()
    assert clock.epoch_seconds(23.0) == pytest.approx(4.0)
    few = StepClock(timer=lambda: 5.0)
    few.tick()
    assert few.epoch_seconds(7.5) == 7.5  # too few steps to tell: the epoch's own time


def test_the_budget_is_fitted_again_on_the_pace_after_the_first_epoch(tmp_path, monkeypatch):
    # The first epoch's steps run slower than the rest (seen on an AVX2 EPYC: 19.5 against
    # 17 s an epoch), so its pace alone would leave part of the budget unused.
    from types import SimpleNamespace

    from posed.engines import backend_common as bc

    now = [0.0]
    monkeypatch.setattr(bc, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    seen = []  # (epoch, the epochs its schedule followed)

    def train_epoch(epoch, cfg, clock):
        for _ in range(4):
            now[0] += 13.0 if epoch == 0 else 10.0
            clock.tick()
        seen.append((epoch, cfg.epochs))
        return np.zeros(3), lr_at(cfg, epoch)

    def run(cfg, existing=(), resume=False):
        return bc.run_epochs(SimpleNamespace(name="p"), 1, cfg, tmp_path, list(existing),
                             resume=resume, progress=False, restore=lambda path: None,
                             load_state=lambda path: len(seen), train_epoch=train_epoch,
                             test_error=lambda: 0.0, save_snapshot=lambda done: None)

    cfg = TrainConfig(epochs=100, budget_minutes=40, save_every=1000)
    run(cfg)
    # First fit: 52 s an epoch keeps 46. After 5 epochs (212 s) at 40 s: 5 + 54 = 59.
    assert seen[bc.REFIT_AFTER - 1] == (4, 46) and seen[bc.REFIT_AFTER] == (5, 59)
    assert len(seen) == 59 and now[0] <= 40 * 60 < now[0] + 40
    record = json.loads((tmp_path / bc.BUDGET_FILE).read_text())
    assert record["refit"] == {"after_epoch": 5, "elapsed_seconds": 212.0,
                               "epoch_seconds": 40.0, "epochs_kept": 59}
    assert yaml.safe_load((tmp_path / "train_config.yaml").read_text())["epochs"] == 59
    # --resume makes the same choice; a run stopped before the refit keeps the first one.
    assert bc._fit_recorded(cfg, record).epochs == 59
    del record["refit"]
    assert bc._fit_recorded(cfg, record).epochs == 46
    # A budget that every epoch fits is left alone.
    seen.clear()
    run(TrainConfig(epochs=8, budget_minutes=40, save_every=1000))
    assert [e for _, e in seen] == [8] * 8


def test_budget_setting_errors_name_the_key():
    cfg = make_train_config([("x", {"budget_minutes": 30})])
    assert cfg.budget_minutes == 30.0 and cfg.to_dict()["budget_minutes"] == 30.0
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="budget_minutes must be a positive number"):
            make_train_config([("x", {"budget_minutes": bad})])
    with pytest.raises(ConfigError, match="f.yaml: key 'budget_minutes': expected float"):
        make_train_config([("f.yaml", {"budget_minutes": "30m"})])
    with pytest.raises(ConfigError, match="budget_minutes: not supported with pseudo_labels"):
        make_train_config([("x", {"budget_minutes": 30, "pseudo_labels": {"enabled": True}})])


def test_large_project_frames_get_the_scratch_crop(tmp_path, caplog):
    """The recipe reads the training images' sizes (PNG headers) and logs the crop it picked."""
    import logging

    import cv2

    from posed.engines.project import create_split, image_size, load_project
    from posed.engines.synth import generate_project
    from posed.engines.training import resolve_train_config

    generate_project(tmp_path / "p", frames=6, size=(400, 240), seed=0, video_frames=0)
    project = load_project(tmp_path / "p")
    split = create_split(project, 1)
    assert image_size(project.root, split.train[0]) == (400, 240)
    with caplog.at_level(logging.INFO, "posed.engines.training.loop"):
        cfg = resolve_train_config(project, 1, None, "pytorch")
    assert cfg.crop == (320, 320) and cfg.epochs == 300  # 2 steps an epoch, at most 300 epochs
    assert any("320x320 crops" in r.message for r in caplog.records)
    jpeg = tmp_path / "p" / "frame.jpg"  # not a PNG: decoded to learn its size
    cv2.imwrite(str(jpeg), np.zeros((50, 70, 3), np.uint8))
    assert image_size(project.root, "frame.jpg") == (70, 50)
    with pytest.raises(DataError, match=r"nothing\.png: image missing"):
        image_size(project.root, "nothing.png")


def test_local_pretrained_backbone_weights_are_loaded(tmp_path):
    torch = pytest.importorskip("torch")
    import timm

    from posed.engines.pytorch.model import PoseNet

    donor = timm.create_model("resnet18", pretrained=False)
    torch.save(donor.state_dict(), tmp_path / "resnet18.pth")
    model = PoseNet("resnet_18", 2, 16, pretrained=str(tmp_path / "resnet18.pth"))
    torch.testing.assert_close(model.backbone.conv1.weight, donor.conv1.weight)
    torch.save({"not": "weights", "w": torch.zeros(1)}, tmp_path / "bad.pth")
    from posed.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="does not fit resnet_18"):
        PoseNet("resnet_18", 2, 16, pretrained=str(tmp_path / "bad.pth"))


def test_training_data_follows_the_split_and_refuses_unlabelled_training_images(project_copy, tmp_path):
    """The loaded training and test sets are the split's images with their labels; a split
    that names a training image without labels is a one-line error naming the folder."""
    import yaml

    from posed.engines.project import create_split, load_labels, load_project, split_path
    from posed.engines.training import load_training_data

    project = load_project(project_copy)
    split = create_split(project, 1)
    labels = load_labels(project)
    row = {img: i for i, img in enumerate(labels.images)}
    cfg = make_train_config([("test", {"net": "mobilenet_v2_0.35"})])
    data = load_training_data(project, 1, cfg, tmp_path)
    assert len(data.images) == len(split.train) and len(data.test_images) == len(split.test)
    for got, img in zip(data.keypoints + data.test_keypoints, split.train + split.test):
        np.testing.assert_array_equal(got, labels.keypoints[row[img]])
    assert data.cfg.crop is None  # synthetic images share one size: no crop chosen

    path = split_path(project, 1)
    doc = yaml.safe_load(path.read_text())
    doc["train"] = doc["train"] + ["labeled-data/synth1/nothere.png"]
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=f"{tmp_path}: split lists 'labeled-data/synth1/nothere.png', "
                                          "which has no labels"):
        load_training_data(project, 1, cfg, tmp_path)


def test_trained_bundle_decodes_in_a_body_window_fitted_to_its_training_labels(trained_project):
    from posed.engines import api
    from posed.engines.decoding import BODY_WINDOW_MARGIN
    from posed.engines.project import load_labels, load_project, load_split

    project = load_project(trained_project)
    labels = load_labels(project)
    rows = [labels.images.index(img) for img in load_split(project, 1).train]
    reach = max(float(np.linalg.norm(kp - np.nanmean(kp, axis=0), axis=1)[
        np.isfinite(kp).all(axis=1)].max()) for kp in labels.keypoints[rows]
        if np.isfinite(kp).all(axis=1).sum() >= 2)
    window = api.resolve_bundle(trained_project).body_window
    assert window == pytest.approx(BODY_WINDOW_MARGIN * reach, abs=0.01)
    # The synthetic animals are small in their 128x128 frames: the window is not the frame.
    assert 10 < window < 64
