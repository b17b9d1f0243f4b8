"""README commands that no other test types as a user would: multi-seed training in local processes feeding
the backtester's seed aggregation, the walk-forward CLI and the tuning CLI (tiny sizes, synthetic market)."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", "configs/quickstart.yaml", "--total-timesteps", "256"]


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_seeds_in_two_processes_then_backtest_the_folder_as_mean_and_spread(tmp_path):
    runs = tmp_path / "seeds"
    _run(["training/train.py", *TINY, "--seeds", "0", "1", "--workers", "2", "--quiet", "--out", str(runs)])
    for seed in (0, 1):
        assert (runs / f"seed_{seed}" / "policy.pth").is_file()
    # Different seeds train different policies.
    assert (runs / "seed_0" / "policy.pth").read_bytes() != (runs / "seed_1" / "policy.pth").read_bytes()
    report = tmp_path / "report"
    _run(["evaluation/backtester.py", "--run", str(runs), "--no-tearsheet", "--out", str(report)])
    md = (report / "metrics.md").read_text()
    assert "mean ± sd over 2 runs" in md and "(seed_0)" in md and "(seed_1)" in md
    assert "SYNTHETIC" in md


def test_walk_forward_cli_writes_one_fold_per_validation_year(tmp_path):
    out = tmp_path / "wf"
    result = _run(["training/walk_forward.py", *TINY, "--years", "2022", "2023", "--seeds", "0", "--out", str(out)])
    for year in (2022, 2023):
        assert (out / f"fold_{year}" / "seed_0" / "policy.pth").is_file()
        manifest = json.loads((out / f"fold_{year}" / "seed_0" / "manifest.json").read_text())
        assert manifest["train_end"] == f"{year - 1}-12-31"
    assert "2022" in result.stdout and "2023" in result.stdout


def test_tuning_cli_writes_a_best_config_that_train_py_accepts(tmp_path):
    out = tmp_path / "tune"
    _run(["training/hyperparameter_tuning.py", *TINY, "--n-trials", "2", "--out", str(out)])
    best = out / "best_config.yaml"
    assert isinstance(yaml.safe_load(best.read_text()), dict)
    assert json.loads((out / "trials.json").read_text())
    _run(["training/train.py", "--config", str(best), "--total-timesteps", "256", "--quiet", "--out", str(tmp_path / "r")])
    assert (tmp_path / "r" / "policy.pth").is_file()


def test_backtester_with_no_arguments_reports_the_benchmarks_into_reports(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "evaluation" / "backtester.py"), "--no-tearsheet"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    md = (tmp_path / "reports" / "benchmarks" / "metrics.md").read_text()
    assert "Equal-weight buy & hold" in md and "SYNTHETIC" in md
    assert "| PPO" not in md  # no run given: benchmarks only
