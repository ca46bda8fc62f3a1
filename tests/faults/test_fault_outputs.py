"""Output paths that cannot be written: a folder, a path under a file, a full disk.

Each is one ``error:`` line naming the path (no traceback), and ``posed bench`` refuses its
``--out`` before it spends minutes measuring.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posed.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_out_as_a_folder_writes_bench_json_inside(tmp_path, capsys):
    code, _, err = _run(capsys, "bench", "--case", "publisher", "--seconds", "0.3",
                        "--out", str(tmp_path), "-q")
    assert code == 0, err
    record = json.loads((tmp_path / "bench.json").read_text())
    assert list(record["results"]) == ["publisher"]
    assert (tmp_path / "bench.md").is_file()


def test_bench_out_under_a_file_is_refused_before_measuring(tmp_path, capsys, monkeypatch):
    from posed import bench

    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("measured before refusing"))
    (blocker := tmp_path / "file").write_text("x")
    code, out, err = _run(capsys, "bench", "--case", "decode", "--out",
                          str(blocker / "res" / "b.json"), "-q")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: --out ") and str(blocker) in err


def test_any_command_writing_under_a_file_is_one_line(tmp_path, capsys):
    (blocker := tmp_path / "file").write_text("x")
    code, _, err = _run(capsys, "synth", str(blocker / "proj"), "--frames", "2",
                        "--video-frames", "2", "-q")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"error: {blocker}") and "Not a directory" in err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_one_line(capsys, monkeypatch):
    """Writing hits ENOSPC (``/dev/full``): the path and the reason, status 1."""
    def full(*_args, **_kwargs):
        with open("/dev/full", "w") as fh:
            fh.write("x" * 65536)
            fh.flush()

    monkeypatch.setattr("posed.engines.synth.generate_project", full)
    code, _, err = _run(capsys, "synth", "/tmp/posed-never-written", "-q")
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: ") and "No space left" in err
