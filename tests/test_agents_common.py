"""Contract checks shared by all agents: layout, masks, the exported policy path, save/load, forecaster."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.common import ObsLayout, alr_from_weights, masked_softmax
from agents.ddpg_agent import DDPGAgent
from agents.forecaster import Forecaster, mean_asset_rmse
from agents.io import AGENT_FORMAT_VERSION, load_agent, save_agent
from agents.ppo_agent import PPOAgent
from agents.sac_agent import SACAgent

torch.set_num_threads(1)
LAYOUT = ObsLayout(window=5, n_assets=3, n_features=2)
SMALL = {
    "ppo": (PPOAgent, dict(window=5, d_model=16, n_heads=2, dim_feedforward=32, day_layers=1)),
    "sac": (SACAgent, dict(window=5, hidden=8)),
    "ddpg": (DDPGAgent, dict(window=5, hidden=8)),
}


def _agent(algo: str, seed: int = 0):
    cls, cfg = SMALL[algo]
    return cls(LAYOUT.obs_dim, LAYOUT.action_dim, seed=seed, **cfg)


def _obs(rng: np.random.Generator, b: int, mask: np.ndarray | None = None) -> np.ndarray:
    feats = rng.standard_normal((b, 5, 3, 2)).astype(np.float32)
    w = rng.dirichlet(np.ones(4), size=b).astype(np.float32)
    m = (rng.random((b, 3)) > 0.4).astype(np.float32) if mask is None else np.broadcast_to(mask, (b, 3))
    return LAYOUT.join_numpy(feats, w, m)


AGENTS = {algo: _agent(algo) for algo in SMALL}
POLICIES = {algo: agent.policy_module() for algo, agent in AGENTS.items()}


def test_layout_split_join_and_infer():
    rng = np.random.default_rng(0)
    obs = _obs(rng, 4)
    assert LAYOUT.obs_dim == 5 * 3 * 2 + 2 * 3 + 1 == obs.shape[1]
    f, w, m = LAYOUT.split(torch.as_tensor(obs))
    assert f.shape == (4, 5, 3, 2) and w.shape == (4, 4) and m.shape == (4, 3)
    np.testing.assert_array_equal(LAYOUT.join_numpy(f.numpy(), w.numpy(), m.numpy()), obs)
    assert ObsLayout.infer(LAYOUT.obs_dim, 4, window=5) == LAYOUT
    assert ObsLayout.from_dict(LAYOUT.to_dict()) == LAYOUT
    with pytest.raises(ValueError, match="does not fit"):
        ObsLayout.infer(LAYOUT.obs_dim + 1, 4, window=5)
    with pytest.raises(ValueError, match="positive integer"):
        ObsLayout(0, 3, 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=5, max_size=5), st.lists(st.booleans(), min_size=4, max_size=4))
def test_masked_softmax_is_on_the_simplex_with_exact_zeros(logits, mask):
    lg = torch.tensor([logits], dtype=torch.float32)
    m1 = torch.tensor([mask + [True]], dtype=torch.float32)
    w = masked_softmax(lg, m1)[0]
    assert torch.all(w >= 0) and abs(float(w.sum()) - 1) < 1e-5
    assert all(float(w[i]) == 0.0 for i in range(4) if not mask[i])
    if all(mask):  # the additive log-ratio inverts the unmasked map
        z = alr_from_weights(w[None])
        torch.testing.assert_close(masked_softmax(torch.cat([z, torch.zeros(1, 1)], 1), m1)[0], w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("algo", sorted(SMALL))
@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_policy_module_gives_masked_assets_zero_weight_on_the_simplex(algo, seed):
    rng = np.random.default_rng(seed)
    obs = torch.as_tensor(_obs(rng, 6))
    policy = POLICIES[algo]
    with torch.no_grad():
        w = policy(obs)
        w_again = policy(obs)
        w_first = policy(obs[:1])
    assert w.dtype == torch.float32 and w.shape == (6, 4)
    assert torch.all(w >= 0)
    torch.testing.assert_close(w.sum(1), torch.ones(6))
    mask = LAYOUT.split(obs)[2]
    assert torch.all(w[:, :3][mask == 0] == 0)  # closed / not yet listed: exactly no weight
    assert torch.equal(w, w_again)
    torch.testing.assert_close(w_first, w[:1], atol=1e-6, rtol=1e-5)
    # exploration path too
    sampled = AGENTS[algo].get_action(obs.numpy())
    assert np.all(sampled[:, :3][mask.numpy() == 0] == 0)
    np.testing.assert_allclose(sampled.sum(1), 1.0, atol=1e-5)


@pytest.mark.parametrize("algo", sorted(SMALL))
def test_all_masked_means_all_cash_and_unlisted_asset_ignored(algo):
    rng = np.random.default_rng(1)
    obs = torch.as_tensor(_obs(rng, 3, mask=np.zeros(3, np.float32)))
    with torch.no_grad():
        w = POLICIES[algo](obs)
    torch.testing.assert_close(w, torch.tensor([[0, 0, 0, 1.0]] * 3))


@pytest.mark.parametrize("algo", sorted(SMALL))
def test_policy_module_traces_and_exports_to_onnx_with_the_same_weights(algo, tmp_path):
    import onnxruntime as ort

    rng = np.random.default_rng(2)
    obs = torch.as_tensor(_obs(rng, 5))
    policy = POLICIES[algo]
    with torch.no_grad():
        ref = policy(obs)
        traced = torch.jit.trace(policy, obs[:2])
    torch.testing.assert_close(traced(obs), ref, atol=1e-6, rtol=1e-5)
    path = tmp_path / "p.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(policy, (obs[:2],), str(path), dynamo=False, opset_version=17, input_names=["obs"],
                          output_names=["weights"], dynamic_axes={"obs": {0: "b"}, "weights": {0: "b"}})
    out = ort.InferenceSession(str(path)).run(None, {"obs": obs.numpy()})[0]
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-5)


@pytest.mark.parametrize("algo", sorted(SMALL))
def test_save_load_round_trip_gives_identical_actions(algo, tmp_path):
    agent = _agent(algo, seed=7)
    (tmp_path / "config.json").write_text(json.dumps({"experiment": {"keep": 1}}))
    save_agent(agent, tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["algo"] == algo and record["version"] == AGENT_FORMAT_VERSION
    assert record["obs_layout"] == LAYOUT.to_dict() and record["experiment"] == {"keep": 1}
    loaded = load_agent(tmp_path)
    obs = _obs(np.random.default_rng(3), 8)
    np.testing.assert_array_equal(loaded.get_action(obs, deterministic=True), agent.get_action(obs, deterministic=True))
    assert type(loaded) is type(agent) and loaded.config == agent.config


def test_load_agent_rejects_bad_run_directories(tmp_path):
    agent = _agent("ppo")
    save_agent(agent, tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    with pytest.raises(ValueError, match="no config.json"):
        load_agent(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps(dict(record, version=AGENT_FORMAT_VERSION + 1)))
    with pytest.raises(ValueError, match="version"):
        load_agent(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in record.items() if k != "obs_layout"}))
    with pytest.raises(ValueError, match="missing the key 'obs_layout'"):
        load_agent(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(record, agent=dict(record["agent"], d_model=32))))
    with pytest.raises(ValueError, match="does not match"):
        load_agent(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(record))
    torch.save({"evil": object.__new__(ObsLayout)}, tmp_path / "policy.pth")  # a pickled object, not tensors
    with pytest.raises(ValueError, match="weights-only"):
        load_agent(tmp_path)


# -- forecaster ------------------------------------------------------------------------------------
def _ar_data(n_days: int, n_assets: int, window: int, phi: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """AR(1) daily log returns r_t = phi r_{t-1} + 1% noise; windows of past returns (in % units) -> next return."""
    rng = np.random.default_rng(seed)
    r = np.zeros((n_days, n_assets))
    for t in range(1, n_days):
        r[t] = phi * r[t - 1] + 0.01 * rng.standard_normal(n_assets)
    x = np.stack([r[t - window + 1 : t + 1] for t in range(window - 1, n_days - 1)])[..., None] / 0.01
    return x.astype(np.float32), r[window:].astype(np.float32)


def test_mean_asset_rmse_by_hand_and_with_validity_mask():
    pred = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    # asset 0: sqrt((1 + 9) / 2) = sqrt(5); asset 1: sqrt((0 + 4) / 2) = sqrt(2)
    assert float(mean_asset_rmse(pred, target)) == pytest.approx((5**0.5 + 2**0.5) / 2, rel=1e-6)
    valid = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert float(mean_asset_rmse(pred, target, valid)) == pytest.approx((5**0.5 + 2.0) / 2, rel=1e-6)


def test_forecaster_beats_the_zero_forecast_on_a_planted_ar_signal(tmp_path):
    x, y = _ar_data(1500, 3, 5, phi=0.6, seed=0)
    layout = ObsLayout(5, 3, 1)
    model = Forecaster.for_layout(layout, hidden=16, epochs=8, learning_rate=3e-3)
    model.fit([(x[i : i + 64], y[i : i + 64]) for i in range(0, 1200, 64)])
    assert model.history_[-1] < model.history_[0]
    scores = model.evaluate([(x[1200:], y[1200:])])
    # the best possible ratio is sqrt(1 - phi^2) = 0.8
    assert scores["rmse"] < scores["rmse_zero"] and scores["rmse_ratio"] < 0.9
    assert scores["directional_accuracy"] > max(scores["up_fraction"], 1 - scores["up_fraction"]) + 0.05
    save_agent(model, tmp_path)
    np.testing.assert_array_equal(load_agent(tmp_path).predict(x[1200:1210]), model.predict(x[1200:1210]))


def test_forecaster_on_pure_noise_does_not_beat_zero_by_much():
    x, y = _ar_data(800, 2, 5, phi=0.0, seed=1)
    model = Forecaster.for_layout(ObsLayout(5, 2, 1), hidden=8, epochs=3, learning_rate=3e-3)
    model.fit([(x[i : i + 64], y[i : i + 64]) for i in range(0, 600, 64)])
    assert model.evaluate([(x[600:], y[600:])])["rmse_ratio"] > 0.97


def test_forecaster_rejects_bad_batches():
    model = Forecaster.for_layout(ObsLayout(5, 2, 1), hidden=8, epochs=2)
    x, y = _ar_data(100, 2, 5, phi=0.5, seed=2)
    with pytest.raises(ValueError, match="one epoch only"):
        model.fit(iter([(x, y)]))
    with pytest.raises(ValueError, match=r"targets \(B, N\)"):
        model.fit([(x, y[:, :1])], epochs=1)
    with pytest.raises(ValueError, match="no batches"):
        model.fit([], epochs=1)
    model.fit(lambda: [(x, y)], epochs=2)
    assert len(model.history_) == 2
    # the dicts data.tf_pipeline.window_dataset yields (mask = validity, day ignored)
    as_dict = {"features": x, "target": y.astype(np.float64), "mask": np.ones_like(y, bool), "day": np.arange(len(y))}
    model.fit([as_dict], epochs=1)
    assert model.evaluate([as_dict])["n"] == y.size
    with pytest.raises(ValueError, match="'features' and 'target'"):
        model.fit([{"features": x}], epochs=1)
