"""Tests of the synthetic DeepLabCut project generator (posed.engines.synth)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import yaml

from posed.engines import synth
from posed.engines.project import load_image, load_labels, load_project, read_label_file
from posed.errors import ConfigError

SIZE = (96, 80)  # width, height: not square, to catch swapped axes
FRAMES = 16
VIDEO_FRAMES = 12


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "proj"
    synth.generate_project(out, frames=FRAMES, size=SIZE, video_frames=VIDEO_FRAMES, seed=3)
    return out


def border_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the outermost pixel ring, which the generator keeps free of the animal."""
    ring = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.median(ring.astype(float), axis=0)


def test_project_loads(project_dir):
    project = load_project(project_dir)
    assert (project.task, project.scorer, project.date) == ("synth", "synth", "Jan1")
    assert project.bodyparts == ("snout", "leftear", "rightear", "tailbase")
    assert project.engine == "pytorch"
    assert project.training_fraction == (0.8,)
    assert project.skeleton == (("snout", "tailbase"),)
    assert project.default_net_type == "mobilenet_v2_0.35"
    assert project.raw["multianimalproject"] is False
    video = project_dir.resolve() / "videos" / "synth1.mp4"
    assert project.raw["video_sets"] == {str(video): {"crop": "0, 96, 0, 80"}}

    data = load_labels(project)
    assert data.images == [f"labeled-data/synth1/img{i:04d}.png" for i in range(FRAMES)]
    kp = data.keypoints
    assert kp.shape == (FRAMES, 4, 2) and kp.dtype == np.float64
    # Only ears may be unlabelled, and x/y go missing together.
    assert not np.isnan(kp[:, [0, 3]]).any()
    assert (np.isnan(kp[..., 0]) == np.isnan(kp[..., 1])).all()
    finite = kp[np.isfinite(kp[..., 0])]
    assert (finite >= 0).all()
    assert (finite[:, 0] <= SIZE[0] - 1).all() and (finite[:, 1] <= SIZE[1] - 1).all()
    for image in data.images:
        assert load_image(project.root, image).shape == (SIZE[1], SIZE[0], 3)


def test_label_files_match_dlc_layout(project_dir):
    folder = project_dir / "labeled-data" / "synth1"
    h5 = folder / "CollectedData_synth.h5"
    df = pd.read_hdf(h5, key="df_with_missing")
    assert df.index.nlevels == 3
    assert df.index[0] == ("labeled-data", "synth1", "img0000.png")
    assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
    assert set(df.columns.get_level_values("coords")) == {"x", "y"}
    assert (df.dtypes == np.float64).all()
    first = (folder / "CollectedData_synth.csv").read_text().splitlines()
    assert first[0].startswith("scorer,,,synth,synth")
    assert first[2].startswith("coords,,,x,y")
    assert first[3].startswith("labeled-data,synth1,img0000.png,")

    a = read_label_file(h5)
    b = read_label_file(folder / "CollectedData_synth.csv")
    assert a.images == b.images
    np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_keypoints_are_on_the_animal(project_dir):
    project = load_project(project_dir)
    data = load_labels(project)
    for image_path, kp in zip(data.images, data.keypoints, strict=True):
        image = load_image(project.root, image_path).astype(float)
        far = border_colour(image)
        x, y = np.round(kp[0]).astype(int)  # snout: the nose dot at the snout tip
        assert np.abs(image[y, x] - far).max() > 40, image_path


def test_video_and_truth(project_dir):
    video = project_dir / "videos" / "synth1.mp4"
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert round(float(stream.average_rate)) == 30
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == VIDEO_FRAMES
    assert all(f.shape == (SIZE[1], SIZE[0], 3) for f in frames)

    lines = (project_dir / "videos" / "synth1_truth.csv").read_text().splitlines()
    assert lines[0] == ",".join(
        ["frame"]
        + [f"{bp}_{c}" for bp in ("snout", "leftear", "rightear", "tailbase") for c in ("x", "y")]
    )
    truth = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert truth.shape == (VIDEO_FRAMES, 9)
    assert (truth[:, 0] == np.arange(VIDEO_FRAMES)).all()
    xy = truth[:, 1:].reshape(VIDEO_FRAMES, 4, 2)
    assert np.isfinite(xy).all()
    assert (xy >= 0).all()
    assert (xy[..., 0] <= SIZE[0] - 1).all() and (xy[..., 1] <= SIZE[1] - 1).all()
    # Smooth motion: no body part jumps more than a few pixels between frames at 30 fps.
    assert np.abs(np.diff(xy, axis=0)).max() < 6
    # The decoded video shows the animal at the true snout position.
    for frame, kp in zip(frames, xy, strict=True):
        x, y = np.round(kp[0]).astype(int)
        assert np.abs(frame[y, x].astype(float) - border_colour(frame)).max() > 30


def test_deterministic_by_seed(tmp_path):
    kwargs = dict(frames=4, size=(64, 48), video_frames=0)
    a = tmp_path / "a"
    b = tmp_path / "b"
    c = tmp_path / "c"
    synth.generate_project(a, seed=5, **kwargs)
    synth.generate_project(b, seed=5, **kwargs)
    synth.generate_project(c, seed=6, **kwargs)
    names = sorted(p.relative_to(a) for p in (a / "labeled-data").rglob("*") if p.is_file())
    assert len(names) == 4 + 2
    for name in names:
        if name.suffix == ".h5":  # HDF5 stamps object times in seconds: compare the tables
            pd.testing.assert_frame_equal(pd.read_hdf(a / name), pd.read_hdf(b / name))
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / names[-1]).read_bytes() != (c / names[-1]).read_bytes()
    ka = load_labels(load_project(a)).keypoints
    kc = load_labels(load_project(c)).keypoints
    assert not np.array_equal(ka, kc, equal_nan=True)


def test_bodyparts_name_catalogue_slots(tmp_path):
    names = [f"p{i}" for i in range(len(synth.CATALOGUE))]
    config = synth.generate_project(
        tmp_path / "p", frames=3, size=(64, 64), video_frames=0, bodyparts=names, seed=1
    )
    ten = load_labels(load_project(config)).keypoints
    config = synth.generate_project(tmp_path / "q", frames=3, size=(64, 64), video_frames=0, seed=1)
    four = load_labels(load_project(config)).keypoints
    # Names are only labels: the same seed draws the same animal, the first slots agree.
    np.testing.assert_array_equal(ten[:, :4], four)
    assert yaml.safe_load(config.read_text())["skeleton"] == [["snout", "tailbase"]]
    assert yaml.safe_load((tmp_path / "p" / "config.yaml").read_text())["skeleton"] == []


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        (
            {"bodyparts": [f"b{i}" for i in range(len(synth.CATALOGUE) + 1)]},
            f"{len(synth.CATALOGUE) + 1} bodyparts requested, at most {len(synth.CATALOGUE)}",
        ),
        ({"bodyparts": ["a", "b", "a"]}, "a more than once"),
        ({"size": (65, 64)}, "even"),
        ({"size": (16, 64)}, "size"),
        ({"frames": 0}, "frames"),
        ({"scorer": "a/b"}, "scorer"),
        ({"missing_rate": 2.0}, "missing_rate"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, needle):
    with pytest.raises(ConfigError) as exc:
        synth.generate_project(tmp_path / "x", **kwargs)
    assert needle in str(exc.value)
    assert not (tmp_path / "x").exists()


def test_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty folder"):
        synth.generate_project(tmp_path, frames=1, video_frames=0)
    synth.generate_project(tmp_path / "empty", frames=1, size=(32, 32), video_frames=0)


def test_missing_ears_are_not_drawn(tmp_path):
    config = synth.generate_project(
        tmp_path / "p", frames=6, size=(64, 64), video_frames=0, missing_rate=0.5, seed=2
    )
    kp = load_labels(load_project(config)).keypoints
    hidden = np.isnan(kp[:, 1:3, 0])
    assert hidden.any() and not hidden.all()
    assert not np.isnan(kp[:, [0, 3]]).any()


def test_render_landmarks_are_exact():
    """Each ear / the nose, drawn or not, changes exactly a disc centred on its keypoint."""
    size = (96, 96)
    background = np.full((96, 96, 3), 120, np.uint8)
    for seed in range(5):
        rng = np.random.default_rng(seed)
        look = synth.random_appearance(background, rng)
        state = synth.random_state(size, rng)

        def draw(st=state, ap=look, rng=rng):
            image, kp = synth.render_animal(
                size, st, rng, appearance=ap, background=background, gain=1.0, noise=0.0
            )
            return image.astype(float), kp

        full, kp = draw()
        assert kp.shape == (len(synth.CATALOGUE), 2) and np.isfinite(kp).all()
        variants = {
            0: draw(ap=replace(look, nose=(0.0, 255.0, 0.0)))[0],
            1: draw(st=replace(state, left_ear_visible=False))[0],
            2: draw(st=replace(state, right_ear_visible=False))[0],
        }
        for slot, other in variants.items():
            ys, xs = np.nonzero(np.abs(full - other).sum(axis=2) > 0)
            centre = np.array([xs.mean(), ys.mean()])
            assert np.hypot(*(centre - kp[slot])) < 0.5, (seed, synth.CATALOGUE[slot])
        hidden_kp = draw(st=replace(state, left_ear_visible=False))[1]
        assert np.isnan(hidden_kp[1]).all() and np.isfinite(hidden_kp[2]).all()
        # The left ear is the darker one (an appearance cue besides position).
        assert sum(look.left_ear) < sum(look.right_ear)
        # Every landmark lies on a drawn pixel (differs from the flat floor).
        for x, y in np.round(kp).astype(int):
            assert np.abs(full[y, x] - 120).max() > 10


def test_generation_is_fast(tmp_path):
    start = time.perf_counter()
    synth.generate_project(tmp_path / "p", frames=60, size=(128, 128), video_frames=60)
    assert time.perf_counter() - start < 5.0
