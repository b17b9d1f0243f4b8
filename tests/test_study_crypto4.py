"""benchmarks/study_crypto4.py at a tiny size on the synthetic market: the files, the labels, the Table 4
numbers consistent with each other by hand identities, and bad input as one sentence with exit status 2."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--source", "synthetic", "--seeds", "0", "--timesteps", "96", "--n-boot", "20",
        "--set", "env.window=10", "--set", "env.episode_length=24", "--set", "training.n_envs=2",
        "--set", "agent.sac.learning_starts=48", "--set", "agent.ddpg.learning_starts=48",
        "--set", "agent.sac.hidden=8", "--set", "agent.ddpg.hidden=8",
        "--set", "agent.sac.lstm_layers=1", "--set", "agent.ddpg.lstm_layers=1"]


def _study():
    spec = importlib.util.spec_from_file_location("study_crypto4", ROOT / "benchmarks" / "study_crypto4.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strict(text: str):
    """JSON that must not hold NaN/Infinity tokens."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    code = _study().main(TINY + ["--out", str(tmp / "runs"), "--results-dir", str(tmp / "res")])
    assert code == 0
    return tmp


def test_study_writes_table4_curves_and_labels_the_data(study):
    res = study / "res"
    for name in ("study_crypto4.json", "study_crypto4.md", "study_crypto4_curves.csv", "study_crypto4_curves.png"):
        assert (res / name).is_file(), name
    report = _strict((res / "study_crypto4.json").read_text())
    assert report["data"]["synthetic"] is True and report["data"]["label"].startswith("SYNTHETIC")
    assert report["size"] == {**report["size"], "seeds": [0], "timesteps_per_run": 96, "algos": ["sac", "ddpg"]}
    assert report["paper_table4"] is None and "not in this repository" in report["paper_note"]
    test = report["spans"]["test_2023"]
    assert test["start"] == "2023-01-01" and test["end"] <= "2023-12-31"
    assert report["spans"]["validation_2022"]["start"] == "2022-01-01"
    rows = {r["name"]: r for r in test["rows"]}
    assert {"sac_seed_0", "ddpg_seed_0", "markowitz", "equal_weight", "equal_weight_bh"} <= set(rows)
    for row in rows.values():
        m = row["metrics"]
        # hand identities: final value = exp(T * mean log return); weights sum to one; losses are negative
        assert m["final_value"] == pytest.approx(math.exp(test["n_days"] * m["mean_log_return"]), rel=1e-9)
        assert sum(row["avg_weight"].values()) == pytest.approx(1.0, abs=1e-9)
        assert m["max_drawdown"] <= 0 and m["cvar_95"] <= m["var_95"]
        assert 0.0 <= m["active_share"] <= 1.0 and "regime_response" in m
    # the point estimates of the bootstrap comparisons are the table's own differences
    by_label = {r["label"]: r["metrics"] for r in test["rows"]}
    for c in report["comparisons_2023"]:
        a, b = by_label[c["sac"]], by_label[c["versus"]]
        assert c["sharpe_diff"]["estimate"] == pytest.approx(a["sharpe"] - b["sharpe"], abs=1e-9)
        assert c["final_value_diff"]["estimate"] == pytest.approx(a["final_value"] - b["final_value"], abs=1e-9)
        assert c["sharpe_diff"]["low"] <= c["sharpe_diff"]["high"]
    assert {c["versus_name"] for c in report["comparisons_2023"]} == {"markowitz", "equal_weight",
                                                                      "equal_weight_bh", "ddpg_seed_0"}
    assert report["validation_json_vs_rerun_max_sharpe_gap"] < 1e-9
    head = (res / "study_crypto4_curves.csv").read_text().splitlines()
    assert head[0].startswith("algo,seed,timestep,episode,") and {ln.split(",")[0] for ln in head[1:]} == {"sac", "ddpg"}


def test_validation_json_is_strict_json_with_null_for_undefined(study, tmp_path):
    from data.atomic_files import write_json

    for algo in ("sac", "ddpg"):
        _strict((study / "runs" / algo / "seed_0" / "validation.json").read_text())
    write_json(tmp_path / "v.json", {"sortino": float("nan"), "x": np.array([1.0, np.inf]), "s": np.float64(0.5)})
    assert _strict((tmp_path / "v.json").read_text()) == {"sortino": None, "x": [1.0, None], "s": 0.5}


def test_bad_input_is_one_sentence_and_status_2(tmp_path, capsys):
    assert _study().main(["--timesteps", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
