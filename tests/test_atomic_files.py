"""``data.atomic_files``: the one temp-file-then-rename writer every layer uses. A failed write leaves the old
file and no temp behind; the new file gets the usual mode; JSON is strict, with null for NaN/inf."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data.atomic_files import atomic_path, atomic_write_bytes, atomic_write_text, json_safe, write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "report.json"
    atomic_write_text(path, "old\n")  # parents are created
    assert path.read_text() == "old\n"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_the_new_file_has_the_usual_mode_and_exact_bytes(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"\x00\r\n\xff")
        atomic_write_text(tmp_path / "a.txt", "x\r\ny\n")  # no newline translation
    finally:
        os.umask(umask)
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\r\n\xff"
    assert (tmp_path / "a.txt").read_bytes() == b"x\r\ny\n"
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644


def test_json_is_strict_with_null_for_undefined_numbers(tmp_path):
    obj = {"nan": float("nan"), 1: np.array([1.5, np.inf, -np.inf]), "i": np.int64(3), "b": np.bool_(True),
           "f": np.float32(0.25), "nested": ({"x": np.float64(-0.0)},)}
    assert json_safe(obj) == {"nan": None, "1": [1.5, None, None], "i": 3, "b": True, "f": 0.25,
                              "nested": [{"x": -0.0}]}
    write_json(tmp_path / "r.json", obj)
    text = (tmp_path / "r.json").read_text()
    assert text.endswith("}\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["1"] == [1.5, None, None]


def test_atomic_path_publishes_a_named_writer_with_the_usual_mode(tmp_path):
    path = tmp_path / "sub" / "curves.png"
    umask = os.umask(0o022)
    try:
        with atomic_path(path) as tmp:
            # a hidden temp beside the target, keeping its suffix (matplotlib picks the format from it)
            assert tmp.parent == path.parent and tmp.name.startswith(".curves.png.") and tmp.suffix == ".png"
            assert tmp.is_file() and not path.exists()
            tmp.write_bytes(b"new")
    finally:
        os.umask(umask)
    assert path.read_bytes() == b"new" and not tmp.exists()
    assert path.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in path.parent.iterdir()) == ["curves.png"]
    with atomic_path(tmp_path / "r.csv.gz", suffix="") as tmp:  # an explicit ending replaces the target's
        assert tmp.name.endswith(".tmp") and tmp.name.startswith(".r.csv.gz.")
        tmp.write_text("x")
    assert (tmp_path / "r.csv.gz").read_text() == "x"


def test_atomic_path_keeps_the_old_file_and_no_temp_when_the_writer_fails(tmp_path):
    path = tmp_path / "nav.csv"
    path.write_text("old\n")
    with pytest.raises(ValueError, match="writer broke"):
        with atomic_path(path) as tmp:
            tmp.write_text("half a fi")
            raise ValueError("writer broke")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nav.csv"]
    with pytest.raises(KeyboardInterrupt):  # not only Exceptions: Ctrl-C, SystemExit from SIGTERM
        with atomic_path(tmp_path / "new.csv") as tmp:
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nav.csv"]  # a missing target stays missing


def test_atomic_path_gives_matplotlib_the_format_of_the_target(tmp_path):
    Figure = pytest.importorskip("matplotlib.figure").Figure
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1], [1, 0])
    for name, magic in (("f.png", b"\x89PNG"), ("f.pdf", b"%PDF"), ("f.svg", b"<?xml")):
        with atomic_path(tmp_path / name) as tmp:
            fig.savefig(tmp)
        assert (tmp_path / name).read_bytes().startswith(magic)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png", "f.svg"]
