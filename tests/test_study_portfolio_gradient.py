"""benchmarks/study_portfolio_gradient.py: the warm-start variants each flag adds (names and the
(downside, risk_aversion) they train with), the configuration count, and bad input as exit status 2."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _study():
    if str(ROOT / "benchmarks") not in sys.path:  # the scripts import their sibling bench_common
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("study_portfolio_gradient",
                                                  ROOT / "benchmarks" / "study_portfolio_gradient.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_variants_name_the_objective_they_train_with():
    study = _study()
    ns = argparse.Namespace(skip_plain=False, downside=5.0, risk_aversion=[1.0, 2.5], sharpe=False)
    assert study.variants_of(ns) == {"pg": (0.0, 0.0, False), "pg_risk": (5.0, 0.0, False),
                                     "pg_var1": (0.0, 1.0, False), "pg_var2.5": (0.0, 2.5, False)}
    ns = argparse.Namespace(skip_plain=True, downside=0.0, risk_aversion=[3.0], sharpe=True)
    assert study.variants_of(ns) == {"pg_var3": (0.0, 3.0, False), "pg_sharpe": (0.0, 0.0, True)}
    # every configuration evaluated on the folds is listed, the committed final run and the variance runs too
    assert {"final/pg", "final/pg_risk+ppo", "var/pg_var1", "var/pg_var3+ppo"} <= set(study.TRIED)
    assert [f[1][:4] for f in study.FOLDS] == ["2021", "2022", "2023"]
    # 20 ledger entries + the plain-PPO baseline; the 5-seed check of pg_var1 reported 21 + its 2 strategies
    assert study.CONFIGURATIONS_SO_FAR == len(study.TRIED) + 1 == 21


@pytest.mark.parametrize("argv", [["--risk-aversion", "0"], ["--folds", "2024"]])
def test_bad_input_exits_2_before_any_training(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _study().main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_source_and_in_sample_span():
    study = _study()
    real = argparse.Namespace(source="csv", data_dir="/data", action_head="assets", set=[])
    assert study.source_overrides(real) == {"data.source": "csv", "data.data_dir": "/data",
                                            "agent.ppo.action_head": "assets"}
    synthetic = argparse.Namespace(source="synthetic", data_dir="/data", action_head="exposure",
                                   set=["agent.ppo.encoder=lstm", "agent.ppo.d_model=16"])
    assert study.source_overrides(synthetic) == {"data.source": "synthetic", "agent.ppo.action_head": "exposure",
                                                 "agent.ppo.encoder": "lstm", "agent.ppo.d_model": 16}
    # the training span's last 365 days, both ends included (2020 is a leap year)
    assert study.in_sample_span("2021-12-31") == ("2021-01-01", "2021-12-31")
    assert study.in_sample_span("2020-12-31") == ("2020-01-02", "2020-12-31")
    with pytest.raises(SystemExit):
        study.main(["--source", "yahoo"])
