"""PPO with each encoder (Transformer, LSTM, MLP): learning, masks, shared distribution, persistence, export.

The Transformer's drift-market learning test lives in tests/test_agents_ppo.py; here the LSTM and MLP
variants pass the same test (same env, same hyper-parameters; the MLP gets more steps).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_agents_env import DriftVecEnv

from agents.common import ObsLayout, masked_softmax
from agents.io import load_agent, save_agent
from agents.lstm_extractor import LSTMExtractor
from agents.off_policy import LSTMPolicyModule
from agents.ppo_agent import PPOAgent, PPOConfig
from agents.ppo_encoders import ENCODERS, LSTMActorCritic, MLPActorCritic, MLPExtractor
from agents.transformer_encoder import PolicyModule, TransformerActorCritic

torch.set_num_threads(1)

SMALL = dict(window=4, d_model=32, dim_feedforward=64, day_layers=1, init_log_std=0.0)
FAST = dict(SMALL, n_steps=64, batch_size=128, n_epochs=10, learning_rate=1e-3, gamma=0.5, gae_lambda=0.9,
            target_kl=0.05)
TINY = dict(window=3, d_model=8, n_heads=2, dim_feedforward=16, day_layers=1, lstm_layers=2, n_steps=16,
            batch_size=16, n_epochs=2)


def tiny_agent(encoder: str, seed: int = 0, layout: ObsLayout | None = None, **over) -> PPOAgent:
    lay = layout or ObsLayout(3, 3, 2)
    return PPOAgent(lay.obs_dim, lay.action_dim, layout=lay, seed=seed, encoder=encoder, **dict(TINY, **over))


def randomize(net: torch.nn.Module, seed: int, scale: float = 0.4) -> None:
    """Redraw every parameter N(0, scale^2): far from the near-uniform initial policy."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * scale)


def random_obs(layout: ObsLayout, b: int, seed: int, p_open: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    feats = rng.standard_normal((b, layout.window, layout.n_assets, layout.n_features)).astype(np.float32)
    mask = (rng.random((b, layout.n_assets)) < p_open).astype(np.float32)
    w = rng.dirichlet(np.ones(layout.action_dim), size=b).astype(np.float32)
    return layout.join_numpy(feats, w, mask)


# -- learning -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("encoder", "steps"), [("lstm", 10240), ("mlp", 20480)])
def test_ppo_with_each_encoder_puts_most_weight_in_the_drifting_asset(encoder, steps):
    env = DriftVecEnv(num_envs=8, noise_vol=0.01)
    agent = PPOAgent(env.obs_dim, 4, seed=0, encoder=encoder, **FAST)
    obs, _ = DriftVecEnv(num_envs=16, noise_vol=0.01).reset(seed=123)
    before = agent.get_action(obs, deterministic=True)[:, 0].mean()
    assert before < 0.4  # the untrained policy is close to uniform (0.25)
    agent.train(env, steps)
    w = agent.get_action(obs, deterministic=True)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    assert w[:, 0].mean() > 0.8, w.mean(0)


# -- the networks and the shared distribution --------------------------------------------------------------
def test_encoder_choice_builds_the_named_network_and_defaults_to_the_transformer():
    assert PPOConfig().encoder == "transformer"
    assert isinstance(tiny_agent("transformer").net, TransformerActorCritic)
    assert isinstance(tiny_agent("lstm").net, LSTMActorCritic)
    assert isinstance(tiny_agent("mlp").net, MLPActorCritic)
    assert isinstance(tiny_agent("transformer").policy_module(), PolicyModule)
    assert isinstance(tiny_agent("mlp").policy_module(), LSTMPolicyModule)
    with pytest.raises(ValueError, match="PPOConfig.encoder must be one of transformer, lstm, mlp, got 'gru'"):
        PPOConfig(encoder="gru")
    with pytest.raises(ValueError, match="mlp_layers"):
        PPOConfig(encoder="mlp", mlp_layers=0)


def test_lstm_encoder_is_the_second_papers_extractor_and_mlp_flattens_each_asset_window():
    layout = ObsLayout(5, 3, 2)
    net = tiny_agent("lstm", layout=layout).net
    assert isinstance(net.encoder, LSTMExtractor) and net.encoder.lstm.num_layers == 2
    feats = torch.randn(4, 5, 3, 2)
    latent = net.encoder(feats)
    assert latent.shape == (4, 4, 8) and torch.all(latent[:, -1] == 0)  # cash: zero embedding
    mlp = MLPExtractor(layout, hidden=6, layers=2)
    lat = mlp(feats)
    # by hand: asset i's window (W, F) flattened day-major, two Linear+LeakyReLU layers, shared weights
    lin1, lin2 = mlp.net[0], mlp.net[2]
    for i in range(3):
        x = feats[:, :, i, :].reshape(4, 10)
        ref = torch.nn.functional.leaky_relu(lin2(torch.nn.functional.leaky_relu(lin1(x), 0.01)), 0.01)
        torch.testing.assert_close(lat[:, i], ref)
    assert torch.all(lat[:, -1] == 0)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_log_prob_and_entropy_are_the_transformers_and_match_torch_distributions(encoder):
    net = tiny_agent(encoder, init_log_std=-0.3).net
    with torch.no_grad():
        net.log_std.copy_(torch.tensor([-0.3, 0.1, 0.5]))
    logits = torch.randn(5, 4)
    mask1 = torch.tensor([[1, 0, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1], [1, 1, 0, 1], [0, 1, 1, 1.0]])
    z = torch.randn(5, 3)
    logp, ent = net.log_prob_entropy(logits, mask1, z)
    dist = torch.distributions.Normal(logits[:, :3] - logits[:, 3:], net.log_std.exp())
    m = mask1[:, :3]
    torch.testing.assert_close(logp, (dist.log_prob(z) * m).sum(-1))
    torch.testing.assert_close(ent, (dist.entropy() * m).sum(-1))
    # the very same functions as the Transformer's (shared, not re-implemented)
    assert type(net).log_prob_entropy is TransformerActorCritic.log_prob_entropy
    assert type(net).sample_latent is TransformerActorCritic.sample_latent


@pytest.mark.parametrize("encoder", ["lstm", "mlp"])
def test_policy_module_equals_the_networks_mean_action_and_get_action(encoder):
    agent = tiny_agent(encoder)
    randomize(agent.net, 1)
    obs = torch.from_numpy(random_obs(agent.layout, 32, 2))
    with torch.no_grad():
        logits, value, mask1 = agent.net(obs)
        w = agent.policy_module()(obs)
    assert value.shape == (32,) and logits.shape == (32, 4)
    torch.testing.assert_close(w, masked_softmax(logits, mask1))
    torch.testing.assert_close(w, agent.net.weights_from_latent(agent.net.mean_latent(logits), mask1), atol=1e-6,
                               rtol=1e-5)
    np.testing.assert_allclose(agent.get_action(obs.numpy(), deterministic=True), w.numpy(), atol=1e-6)
    assert w.max() > 0.6  # randomised weights: far from uniform, so the comparisons above mean something


POLICIES = {}


def _policy(encoder: str) -> torch.nn.Module:
    if encoder not in POLICIES:
        agent = tiny_agent(encoder, layout=ObsLayout(2, 4, 3))
        randomize(agent.net, 7, 0.5)
        POLICIES[encoder] = agent.policy_module()
    return POLICIES[encoder]


@settings(max_examples=25, deadline=None)
@given(encoder=st.sampled_from(ENCODERS), seed=st.integers(0, 2**31 - 1), p_open=st.sampled_from([0.0, 0.5, 1.0]))
def test_masked_assets_get_exactly_zero_and_weights_stay_on_the_simplex(encoder, seed, p_open):
    layout = ObsLayout(2, 4, 3)
    obs = random_obs(layout, 8, seed, p_open)
    obs[:, : layout.feature_dim] *= 5.0  # large features: saturating logits must still mask exactly
    with torch.no_grad():
        w = _policy(encoder)(torch.from_numpy(obs)).numpy()
    mask = layout.split_numpy(obs)[2]
    assert np.all(w >= 0) and np.allclose(w.sum(1), 1.0, atol=1e-5)
    assert np.all(w[:, :-1][mask == 0] == 0.0)
    if p_open == 0.0:
        np.testing.assert_array_equal(w[:, -1], 1.0)


@pytest.mark.parametrize("encoder", ["lstm", "mlp"])
def test_sampled_actions_also_give_masked_assets_zero(encoder):
    env = DriftVecEnv(num_envs=4, masked_asset=1)
    agent = PPOAgent(env.obs_dim, 4, seed=0, encoder=encoder, **dict(FAST, n_steps=8, batch_size=16))
    obs, _ = env.reset(seed=0)
    seen_closed = 0
    for _ in range(4):
        w = agent.get_action(obs)
        closed = obs[:, -2] == 0  # mask slot of asset 1 (the last N=3 entries are the mask)
        assert np.all(w[closed, 1] == 0.0) and np.allclose(w.sum(1), 1.0, atol=1e-5)
        seen_closed += int(closed.sum())
        obs, *_ = env.step(w)
    assert seen_closed > 0
    agent.train(env, 64)  # the rollout/update path runs with a closed asset too
    assert agent.global_step == 64


# -- determinism, persistence ----------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["lstm", "mlp"])
def test_same_seed_same_weights_and_resume_is_bit_identical(encoder, tmp_path):
    cfg = dict(FAST, n_steps=16, d_model=16)
    a = PPOAgent(DriftVecEnv().obs_dim, 4, seed=3, encoder=encoder, **cfg)
    a.train(DriftVecEnv(num_envs=2), 96)
    b = PPOAgent(DriftVecEnv().obs_dim, 4, seed=3, encoder=encoder, **cfg)
    env_b = DriftVecEnv(num_envs=2)
    b.train(env_b, 96, callback=lambda step, _: step < 32)
    assert b.global_step == 32
    b.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = PPOAgent.load_checkpoint(tmp_path / "ckpt.pt")
    assert resumed.config.encoder == encoder
    resumed.train(env_b, 96)
    for (name, pa), pr in zip(a.net.state_dict().items(), resumed.net.state_dict().values()):
        assert torch.equal(pa, pr), name
    c = PPOAgent(DriftVecEnv().obs_dim, 4, seed=4, encoder=encoder, **cfg)
    c.train(DriftVecEnv(num_envs=2), 96)
    assert not torch.equal(c.net.actor.fc2.weight, a.net.actor.fc2.weight)


@pytest.mark.parametrize("encoder", ENCODERS)
def test_save_load_round_trip_keeps_the_encoder(encoder, tmp_path):
    agent = tiny_agent(encoder, seed=2)
    randomize(agent.net, 3)
    save_agent(agent, tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["agent"]["encoder"] == encoder
    loaded = load_agent(tmp_path)
    assert loaded.config == agent.config and type(loaded.net) is type(agent.net)
    obs = torch.from_numpy(random_obs(agent.layout, 16, 4))
    with torch.no_grad():
        assert torch.equal(loaded.policy_module()(obs), agent.policy_module()(obs))


def test_old_config_without_the_encoder_key_loads_as_a_transformer(tmp_path):
    agent = tiny_agent("transformer")
    save_agent(agent, tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    for key in ("encoder", "lstm_layers", "mlp_layers"):
        del record["agent"][key]  # what config.json looked like before the encoder choice existed
    (tmp_path / "config.json").write_text(json.dumps(record))
    loaded = load_agent(tmp_path)
    assert loaded.config.encoder == "transformer" and isinstance(loaded.net, TransformerActorCritic)


def test_lstm_weights_in_a_transformer_config_are_refused_in_one_sentence(tmp_path):
    save_agent(tiny_agent("lstm"), tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    record["agent"]["encoder"] = "transformer"
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"^policy.pth does not match config.json"):
        load_agent(tmp_path)


def test_experiment_config_accepts_the_encoder_key_and_rejects_an_unknown_one():
    from data.market import DataError
    from training.config import validate_agent_params

    assert validate_agent_params("ppo", {"encoder": "mlp", "mlp_layers": 3}).encoder == "mlp"
    with pytest.raises(DataError, match="agent.ppo is invalid: PPOConfig.encoder must be one of"):
        validate_agent_params("ppo", {"encoder": "cnn"})


# -- export ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ["lstm", "mlp"])
def test_tf_port_onnx_and_torchscript_match_pytorch(encoder, tmp_path):
    import onnxruntime as ort

    from deployment import tf_policy
    from deployment.model_export import export_onnx, export_torchscript, tf_module_for

    layout = ObsLayout(4, 3, 5)
    agent = tiny_agent(encoder, layout=layout, window=4)
    randomize(agent.net, 11)
    obs = random_obs(layout, 64, 12)
    module = agent.policy_module()
    with torch.no_grad():
        ref = module(torch.from_numpy(obs)).numpy()
    assert ref.max() > 0.6 and (ref[:, :-1][layout.split_numpy(obs)[2] == 0] == 0).all()
    tf_mod = tf_module_for("ppo", agent, layout)
    assert np.abs(tf_mod.allocate(obs)["weights"].numpy() - ref).max() < 1e-5
    tf_policy.save_tf_policy(tf_mod, str(tmp_path / "sm"))
    np.testing.assert_allclose(tf_policy.run_saved_model(str(tmp_path / "sm"), obs), ref, atol=1e-5)
    export_onnx(module, torch.from_numpy(obs[:2]), tmp_path / "p.onnx", {"algo": "ppo"})
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    assert np.abs(sess.run(None, {"obs": obs})[0] - ref).max() < 1e-5
    export_torchscript(module, torch.from_numpy(obs[:2]), tmp_path / "p.ts")
    with torch.no_grad():
        ts = torch.jit.load(str(tmp_path / "p.ts"))(torch.from_numpy(obs)).numpy()
    assert np.abs(ts - ref).max() < 1e-5


def _run_dir(path, encoder: str) -> ObsLayout:
    """A minimal run directory (no data section: the exporter samples N(0,1) observations)."""
    layout = ObsLayout(3, 3, 4)
    agent = tiny_agent(encoder, layout=layout)
    randomize(agent.net, 5)
    save_agent(agent, path)
    (path / "manifest.json").write_text(json.dumps({
        "tickers": ["A", "B", "C"], "categories": ["growth", "hedge", "stable"],
        "feature_names": ["f0", "f1", "f2", "f3"], "norm": {"mean": [0.0] * 4, "std": [1.0] * 4}}))
    return layout


def test_export_cli_writes_four_formats_for_ppo_mlp_with_parity(tmp_path, capsys):
    from deployment.model_export import main

    _run_dir(tmp_path / "run", "mlp")
    assert main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "export"), "--n-obs", "200"]) == 0
    report = json.loads((tmp_path / "export" / "parity.json").read_text())
    assert report["passed"] and report["n_observations"] == 200
    assert set(report["max_abs_diff"]) == {"torchscript", "onnx", "saved_model", "tf_onnx", "onnx_split",
                                           "torchscript_split"}
    assert max(report["max_abs_diff"].values()) <= 1e-5
    assert "parity tf_onnx" in capsys.readouterr().out


def test_export_cli_refuses_an_unknown_encoder_with_exit_2(tmp_path, capsys):
    from deployment.model_export import main

    _run_dir(tmp_path / "run", "lstm")
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    record["agent"]["encoder"] = "gru"
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    assert main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "encoder must be one of transformer, lstm, mlp" in err
    assert err.count("\n") == 1 and "Traceback" not in err and not (tmp_path / "x").exists()


def test_parameter_counts_follow_the_documented_shapes():
    layout = ObsLayout(3, 3, 2)
    h = 8
    lstm = tiny_agent("lstm", layout=layout).net
    mlp = tiny_agent("mlp", layout=layout).net
    heads = (h + 1) * h + h + h * 1 + 1  # AssetScoreHead(H, 1)
    critic = (3 * h + 4) * h + h + h + 1
    lstm_enc = (2 * h + h) + 2 * (4 * h * h * 2 + 8 * h)  # fc + 2 LSTM layers (w_ih, w_hh, two biases)
    mlp_enc = (3 * 2 * h + h) + (h * h + h)
    assert sum(p.numel() for p in lstm.parameters()) == lstm_enc + heads + critic + 3
    assert sum(p.numel() for p in mlp.parameters()) == mlp_enc + heads + critic + 3
    assert math.isclose(float(lstm.log_std.detach().mean()), PPOConfig().init_log_std)
