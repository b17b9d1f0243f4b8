"""Temporary output folders: swept when their writer was killed, removed when it is terminated, swapped into
place with the previous folder kept when the swap fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.atomic_dir import make_temp_dir, publish_dir, sweep_stale

ROOT = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_folders_of_dead_writers_are_swept_and_live_ones_kept(tmp_path):
    out = tmp_path / "store"
    stale = tmp_path / f".store.tmp-{dead_pid()}-abc"
    old = tmp_path / f".store.old-{dead_pid()}-def"
    live = tmp_path / f".store.tmp-{os.getppid()}-ghi"  # a running process (pytest's parent)
    other = tmp_path / f".other.tmp-{dead_pid()}-jkl"  # another output's folder: not ours to touch
    for p in (stale, old, live, other):
        (p / "sub").mkdir(parents=True)
    new = make_temp_dir(out)
    assert not stale.exists() and not old.exists() and live.exists() and other.exists()
    assert new.name.startswith(f".store.tmp-{os.getpid()}-") and new.is_dir()
    assert sweep_stale(out) == []  # our own folder is never swept


SCRIPT = """
import sys, time
from pathlib import Path
from data.atomic_dir import make_temp_dir, sigterm_interrupts

@sigterm_interrupts
def write(out):
    tmp = make_temp_dir(out)
    try:
        (tmp / "part").write_text("half")
        print(tmp, flush=True)
        time.sleep(60)
    finally:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)

write(Path(sys.argv[1]))
"""


def test_sigterm_runs_the_writers_clean_up(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "export")], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_dir() and (tmp / "part").is_file()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.time() + 5
    while tmp.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert not tmp.exists() and list(tmp_path.iterdir()) == []


def test_the_store_writer_and_the_exporter_are_covered():
    from data.tf_pipeline import write_store
    from deployment.model_export import export_run

    for fn in (write_store, export_run):
        assert fn.__wrapped__ is not None  # @sigterm_interrupts


def _folder(tmp: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp / name).write_text(text)
    return tmp


def test_publish_dir_swaps_in_the_new_folder_with_the_usual_mode_and_no_trash(tmp_path):
    out = tmp_path / "store"
    umask = os.umask(0o022)
    try:
        tmp = _folder(make_temp_dir(out), a="1")
        assert tmp.stat().st_mode & 0o777 == 0o700  # mkdtemp: owner-only
        publish_dir(tmp, out)  # no previous folder
        assert out.stat().st_mode & 0o777 == 0o755 and (out / "a").read_text() == "1"
        publish_dir(_folder(make_temp_dir(out), b="2"), out)  # replaces the previous folder
    finally:
        os.umask(umask)
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no temp, no trash


def test_a_failed_swap_puts_the_previous_folder_back_and_leaves_no_trash(tmp_path, monkeypatch):
    out = tmp_path / "export"
    out.mkdir()
    (out / "old").write_text("kept")
    tmp = _folder(make_temp_dir(out), new="lost")
    rename = Path.rename

    def failing_rename(self, target):
        if self == tmp:
            raise OSError("rename failed")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="rename failed"):
        publish_dir(tmp, out)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["old"] and (out / "old").read_text() == "kept"
    assert not list(tmp_path.glob(".export.old-*"))  # the trash folder is gone
    assert tmp.is_dir()  # the writer's own finally removes its temp folder
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["export", tmp.name])
