"""Real DeepLabCut data: the openfield and Reaching example projects (skipped when absent).

The openfield video analysis is in test_realdata_video.py, so that the two run in parallel.
"""

from __future__ import annotations

import shutil

import pytest

from conftest import DLC_EXAMPLES

OPENFIELD = DLC_EXAMPLES / "openfield-Pranav-2018-10-30"

pytestmark = [pytest.mark.realdata, pytest.mark.slow,
              pytest.mark.skipif(not OPENFIELD.is_dir(), reason="shared DLC example data absent")]


def test_evaluate_openfield_writes_a_table(openfield_trained):
    from posed.engines import api
    from posed.engines.project import load_project

    result = api.evaluate_network(load_project(openfield_trained), 1)
    assert result.table.loc[("train", "all"), "n"] == 88 * 4
    assert result.table.loc[("test", "all"), "n"] == 5 * 4
    assert (result.folder / "errors.csv").is_file()


def test_evaluate_from_the_cli_notes_the_test_image_with_swapped_ears(openfield_trained, capsys):
    """m4s1/img0102.png has its ear labels the other way round (tests/test_labelcheck.py):
    the evaluation says that its error counts against the model."""
    from posed.cli import main

    assert main(["evaluate", str(openfield_trained), "-q"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "labeled-data/m4s1/img0102.png: leftear/rightear" in notes[0]


REACHING = DLC_EXAMPLES / "Reaching-Mackenzie-2018-08-30"


@pytest.mark.skipif(not REACHING.is_dir(), reason="shared DLC example data absent")
def test_reaching_trains_with_mixed_image_sizes_and_missing_labels(tmp_path):
    """Reaching has 832x747 and 640x470 frames and a mostly unlabelled Tongue."""
    pytest.importorskip("torch")
    from posed.engines import api
    from posed.engines.project import load_project

    proj = tmp_path / REACHING.name
    shutil.copytree(REACHING, proj)
    for p in proj.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    project = load_project(proj)
    folder = api.train_network(project, 1, "torch", {"net": "mobilenet_v2_0.35", "epochs": 1,
                                                        "crop": [128, 128], "batch_size": 16,
                                                        "recipe": "finetune"},
                                  progress=False)
    result = api.evaluate_network(project, 1)
    assert result.table.loc[("train", "Tongue"), "n"] < result.table.loc[("train", "Hand"), "n"]
    assert (folder / "snapshot-001.safetensors").is_file()
