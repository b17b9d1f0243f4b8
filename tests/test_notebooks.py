"""The research notebooks execute end to end at a tiny size and produce their key outputs.

Each notebook is read from ``research/``, its single ``parameters`` cell is extended in memory with
small sizes, a probe cell is appended that prints the notebook's result record as JSON, and the whole
notebook runs in a fresh kernel with nbclient. Synthetic data only: the CSV case writes its own CSV
folder from the seeded simulator.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

ROOT = Path(__file__).resolve().parents[1]
RESEARCH = ROOT / "research"
NOTEBOOKS = ("exploratory_analysis.ipynb", "ablation_studies.ipynb")

EDA_SMALL = """
config_path = "configs/quickstart.yaml"
max_assets_per_category = 1
features_to_plot = ["ret_1", "rsi_14", "not_a_feature"]
"""

ABLATION_SMALL = """
total_timesteps = 256
n_envs = 4
seeds = [0]
window = 5
episode_length = 30
n_evals = 2
n_boot = 50
val_end = "2023-03-31"
max_assets_per_category = 1
agent_overrides = {
    "sac": {"learning_starts": 64, "hidden": 8, "lstm_layers": 1, "batch_size": 32},
    "ddpg": {"learning_starts": 64, "hidden": 8, "lstm_layers": 1, "batch_size": 32},
}
"""

EDA_PROBE = """
import json
print("RESULT " + json.dumps({
    "results": EDA_RESULTS,
    "labels": {k: v.attrs.get("data_source", "") for k, v in TABLES.items()},
    "tickers": list(market.tickers),
    "tail_rows": list(tail_table.index),
    "category_rows": list(category_tails.index),
    "sharpe_rows": list(rs_table.index),
    "regimes": list(TABLES["Regimes of the growth index"].index),
    "plotted_features": plot_feats,
}))
"""

ABLATION_PROBE = """
import json
print("RESULT " + json.dumps({
    "results": ABLATION_RESULTS,
    "labels": {k: v.attrs.get("data_source", "") for k, v in TABLES.items()},
    "run_keys": sorted("/".join(map(str, k)) for k in RUNS),
    "curve_steps": {"/".join(map(str, k)): r["evals"]["step"].tolist() for k, r in RUNS.items()},
    "summary_rows": len(summary_table),
    "run_root_removed": not RUN_ROOT.exists(),
}))
"""


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook has exactly one parameters cell"
    return cells[0]


def execute(name: str, overrides: str, probe: str, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, list]:
    """Run notebook ``name`` with ``overrides`` appended to its parameters cell; return (probe JSON, cells)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    nb = nbformat.read(RESEARCH / name, as_version=4)
    parameters_cell(nb).source += "\n# test overrides\n" + overrides
    nb.cells.append(new_code_cell(probe))
    NotebookClient(nb, timeout=240, kernel_name="python3",
                   resources={"metadata": {"path": str(RESEARCH)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    line = next(ln for ln in text.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), nb.cells


def outputs_of(cells: list, mime: str) -> int:
    return sum(mime in o.get("data", {}) for c in cells if c.cell_type == "code" for o in c.outputs)


# -- the committed notebooks ------------------------------------------------------------------------------
def test_notebooks_match_their_sources_and_carry_no_outputs():
    check = subprocess.run([sys.executable, str(RESEARCH / "build_notebooks.py"), "--check"],
                           capture_output=True, text=True, cwd=ROOT)
    assert check.returncode == 0, check.stderr
    for name in NOTEBOOKS:
        nb = nbformat.read(RESEARCH / name, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} has outputs"
        first = code[0]
        assert first is parameters_cell(nb), f"{name}: the parameters cell must be the first code cell"
        assert 'source = "synthetic"' in first.source and "data_dir = None" in first.source
        assert not any("import research" in c.source or "from research" in c.source for c in code)


def test_build_script_rejects_an_unknown_notebook():
    bad = subprocess.run([sys.executable, str(RESEARCH / "build_notebooks.py"), "nope.ipynb"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: unknown notebook 'nope.ipynb'") and "Traceback" not in bad.stderr


# -- execution ----------------------------------------------------------------------------------------------
def test_exploratory_analysis_runs_on_the_synthetic_market(monkeypatch):
    out, cells = execute("exploratory_analysis.ipynb", EDA_SMALL, EDA_PROBE, monkeypatch)
    res = out["results"]
    assert res["source"] == "synthetic"
    assert set(res["categories"]) == {"growth", "hedge", "traditional", "stable"}
    assert out["tail_rows"] == out["tickers"] == out["sharpe_rows"]
    assert len(out["tickers"]) == res["n_assets"] == 4
    assert set(out["category_rows"]) == set(res["categories"])
    assert set(out["regimes"]) == {"calm", "stress"}
    assert out["plotted_features"] == ["ret_1", "rsi_14"]  # unknown names are skipped
    assert res["n_features"] >= 50
    assert len(out["labels"]) >= 10
    assert all(label.startswith("SYNTHETIC") for label in out["labels"].values()), out["labels"]
    assert outputs_of(cells, "image/png") >= 5
    assert outputs_of(cells, "application/vnd.plotly.v1+json") >= 2


def test_exploratory_analysis_runs_on_a_csv_folder(tmp_path, monkeypatch):
    from data.synthetic import generate_market
    from data.universe import build_universe

    universe = build_universe({"growth": ["BTC-USD"], "hedge": ["UVXY"], "traditional": ["SPY"], "stable": ["BIL"]})
    market = generate_market(universe, "2019-06-01", "2024-01-31", seed=3)
    for i, ticker in enumerate(market.tickers):
        rows = market.tradable[:, i]
        pd.DataFrame({
            "Date": pd.DatetimeIndex(market.dates[rows]).strftime("%Y-%m-%d"),
            "Open": market.open[rows, i], "High": market.high[rows, i], "Low": market.low[rows, i],
            "Close": market.close[rows, i], "Volume": market.volume[rows, i],
        }).to_csv(tmp_path / f"{ticker}.csv", index=False)
    overrides = EDA_SMALL + f"data_dir = {str(tmp_path)!r}\n"
    out, _ = execute("exploratory_analysis.ipynb", overrides, EDA_PROBE, monkeypatch)
    assert out["results"]["source"] == "csv"
    assert out["tickers"] == ["BTC-USD", "UVXY", "SPY", "BIL"]
    assert all(label.startswith("CSV prices from") for label in out["labels"].values())
    assert not any("SYNTHETIC" in label for label in out["labels"].values())


def test_ablation_studies_run_every_variant(monkeypatch):
    out, cells = execute("ablation_studies.ipynb", ABLATION_SMALL, ABLATION_PROBE, monkeypatch)
    res = out["results"]
    assert res["synthetic"] and res["source"] == "synthetic"
    assert res["reward_rows"] == ["log_return", "dsr", "risk_adjusted"]
    assert res["algo_rows"] == ["PPO", "SAC", "DDPG"]
    assert res["cost_rows"] == ["cost x0", "cost x1", "cost x2", "cost x5"]
    assert res["encoder_rows"] == ["Transformer (PPO)", "LSTM (PPO)", "MLP (PPO)"]  # algorithm held fixed
    # The baseline (PPO-Transformer, log_return, cost x1) is shared by the four studies: 3 + 2 + 2 + 3 = 10
    # runs per seed.
    assert res["n_runs"] == 10 == len(out["run_keys"])
    assert sum(k.startswith("ppo/lstm/") or k.startswith("ppo/mlp/") for k in out["run_keys"]) == 2
    assert out["summary_rows"] == 3 + 3 + 3 + 4
    for steps in out["curve_steps"].values():  # the untrained network first, the final step last
        assert steps[0] == 0 and steps[-1] == 256
    assert all(label.startswith("SYNTHETIC") for label in out["labels"].values())
    assert len(out["labels"]) == len(res["tables"]) >= 7
    assert out["run_root_removed"]
    assert outputs_of(cells, "image/png") >= 4  # reward, algorithm, encoder and cost figures
