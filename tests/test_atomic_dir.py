"""Temporary output folders: swept when their writer was killed, removed when it is terminated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from data.atomic_dir import make_temp_dir, sweep_stale

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
