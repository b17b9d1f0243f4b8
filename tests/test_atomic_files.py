"""``data.atomic_files``: the one temp-file-then-rename writer every layer uses. A failed write leaves the old
file and no temp behind; the new file gets the usual mode; JSON is strict, with null for NaN/inf."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data.atomic_files import atomic_write_bytes, atomic_write_text, json_safe, write_json


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
