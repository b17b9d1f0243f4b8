"""Runs that cannot be corrupted: a re-train into a finished run's folder and a ``--resume`` are killed
(SIGKILL, no clean-up) midway, and a resume from a broken checkpoint fails; every time the finished run's
files stay byte-identical and the run still loads and exports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_training import TINY, TINY_ARGS

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ("policy.pth", "config.json", "manifest.json", "validation.json", "curves.csv")


def _snapshot(run: Path) -> dict[str, bytes]:
    return {name: (run / name).read_bytes() for name in RUN_FILES}


def _start(log: Path, *args: str) -> subprocess.Popen:
    with open(log, "w") as fh:  # a file, not a pipe: nobody reads a pipe while the run works
        return subprocess.Popen([sys.executable, str(ROOT / "training" / "train.py"), *TINY_ARGS, "--quiet", *args],
                                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, text=True)


def _kill_when(proc: subprocess.Popen, log: Path, ready, what: str, timeout: float = 240.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled); fail if it exits or times out first."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"train.py exited ({proc.returncode}) before {what}: {log.read_text()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _step(run: Path, d_model: int) -> int:
    """The checkpoint's step when the checkpoint folder belongs to the experiment with ``d_model``, else -1."""
    try:
        record = json.loads((run / "checkpoints" / "experiment.json").read_text())
        if record["experiment"]["agent"]["ppo"]["d_model"] != d_model:
            return -1
        return int(json.loads((run / "checkpoints" / "progress.json").read_text())["global_step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def test_killed_retrain_and_resume_leave_the_finished_run_loadable_and_exportable(tmp_path):
    from agents.io import load_agent
    from deployment.model_export import main as export_main
    from training.config import load_experiment
    from training.train import run_training

    torch.set_num_threads(1)
    run = tmp_path / "run"
    run_training(load_experiment(None, TINY), run, progress=False)
    finished = _snapshot(run)
    layout = load_agent(run).layout
    reference = load_agent(run).policy_module()

    # 1. A re-train with another network size into the same folder, killed after its first checkpoint.
    bigger = ["--set", "agent.ppo.d_model=32", "--set", "training.checkpoint_every=64"]
    proc = _start(tmp_path / "retrain.log", *bigger, "--total-timesteps", "1000000", "--out", str(run))
    _kill_when(proc, tmp_path / "retrain.log", lambda: _step(run, 32) >= 64, "the re-train's first checkpoint")
    assert _snapshot(run) == finished

    # 2. Its --resume, killed once it has trained past the checkpoint it resumed from.
    start = _step(run, 32)  # the interrupted re-train's checkpoint, under its own experiment record
    proc = _start(tmp_path / "resume.log", *bigger, "--total-timesteps", "1000000", "--resume", "--out", str(run))
    _kill_when(proc, tmp_path / "resume.log", lambda: _step(run, 32) > start, "the resumed run's next checkpoint")
    assert _snapshot(run) == finished

    # 3. A resume that fails while loading the checkpoint: one sentence, exit 2, run files untouched.
    (run / "checkpoints" / "latest.pt").write_bytes(b"not a torch file")
    res = subprocess.run([sys.executable, str(ROOT / "training" / "train.py"), *TINY_ARGS, *bigger, "--quiet",
                          "--resume", "--total-timesteps", "1000000", "--out", str(run)],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert res.returncode == 2 and res.stderr.startswith("error: --resume: ") and "Traceback" not in res.stderr
    assert _snapshot(run) == finished

    # The finished run still rebuilds the same policy and exports (all four formats agree with PyTorch).
    obs = torch.randn(4, layout.obs_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(load_agent(run).policy_module()(obs), reference(obs))
    assert export_main(["--run", str(run), "--out", str(tmp_path / "export"), "--n-obs", "16"]) == 0
    assert json.loads((tmp_path / "export" / "parity.json").read_text())["passed"] is True
