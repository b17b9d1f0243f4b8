"""PPO's exposure head (``PPOConfig.action_head = "exposure"``): one logit per day, an equal-weight sleeve over
the tradable assets against cash, explored with one shared Gaussian draw.

Checked: the distribution against ``torch.distributions.Normal`` (one dimension, whatever the mask), the
structure of every action (deterministic and sampled: the tradable assets equal, masked exactly 0), the
``learn()`` path's exact inverse, that PPO with it learns to hold cash when the risky sleeve drifts down, the
config's refusals, and export parity of the four formats.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_agents_encoders import TINY, random_obs, randomize
from test_agents_env import DriftVecEnv

from agents import distributions as D
from agents.common import ObsLayout, alr_from_weights
from agents.io import load_agent, save_agent
from agents.ppo_agent import PPOAgent, PPOConfig

torch.set_num_threads(1)


def exposure_agent(layout: ObsLayout | None = None, seed: int = 0, encoder: str = "transformer", **over) -> PPOAgent:
    lay = layout or ObsLayout(3, 3, 2)
    return PPOAgent(lay.obs_dim, lay.action_dim, layout=lay, seed=seed, action_head="exposure", encoder=encoder,
                    **dict(TINY, **over))


def test_exposure_logits_put_the_cash_tokens_output_on_every_asset_and_zero_on_cash():
    token_logits = torch.tensor([[0.3, -1.0, 2.0, 0.7], [5.0, 5.0, 5.0, -0.2]])
    out = D.exposure_logits(token_logits)
    torch.testing.assert_close(out, torch.tensor([[0.7, 0.7, 0.7, 0.0], [-0.2, -0.2, -0.2, 0.0]]))
    # masked_softmax of them: 1 / (K + exp(-s)) on each of the K tradable assets (hand-computed for K = 2)
    mask1 = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    w = D.weights_from_latent(D.mean_latent(out[:1]), mask1)
    each = 1.0 / (2.0 + np.exp(-0.7))
    np.testing.assert_allclose(w.numpy()[0], [each, 0.0, each, 1.0 - 2 * each], rtol=1e-6)


def test_pooled_exposure_logits_average_the_tradable_assets_against_the_cash_row():
    out = torch.tensor([[1.0, 3.0, -2.0, 0.5], [4.0, 4.0, 4.0, 1.0]])
    mask1 = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    # (1 + 3) / 2 - 0.5 = 1.5; no tradable asset: s = -cash output (the weights are all cash anyway)
    torch.testing.assert_close(D.pooled_exposure_logits(out, mask1),
                               torch.tensor([[1.5, 1.5, 1.5, 0.0], [-1.0, -1.0, -1.0, 0.0]]))
    # the order of the assets does not matter
    perm = torch.tensor([2, 0, 1, 3])
    torch.testing.assert_close(D.pooled_exposure_logits(out[:, perm], mask1[:, perm]), D.pooled_exposure_logits(out, mask1))


def test_shared_log_prob_and_entropy_are_one_dimensional_normals():
    mu = torch.tensor([[0.5, 0.5, 0.5], [-1.0, -1.0, -1.0], [2.0, 2.0, 2.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    eps = torch.tensor([[0.3], [-1.2], [2.0]])
    log_std = torch.tensor([-0.4])
    z = mu + eps * log_std.exp()
    z[1, 1] = 123.0  # a masked coordinate's latent is ignored
    normal = torch.distributions.Normal(torch.zeros(1), log_std.exp())
    torch.testing.assert_close(D.shared_log_prob(z, mu, log_std, mask), normal.log_prob(eps[:, 0] * log_std.exp()))
    torch.testing.assert_close(D.shared_entropy(log_std, 3), normal.entropy().expand(3))
    torch.testing.assert_close(D.shared_noise(z, mu, mask), eps[:, 0] * log_std.exp())


@pytest.mark.parametrize("encoder", ["transformer", "lstm", "mlp"])
def test_every_action_keeps_the_tradable_assets_equal_and_masked_ones_at_zero(encoder):
    layout = ObsLayout(3, 4, 2)
    agent = exposure_agent(layout, encoder=encoder)
    randomize(agent.net, 3)
    obs = random_obs(layout, 64, 4)
    mask = layout.split_numpy(obs)[2]
    for deterministic in (True, False):
        w = agent.get_action(obs, deterministic=deterministic)
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
        assert (w[:, :-1][mask == 0] == 0).all()
        for row, m in zip(w, mask):
            tradable = row[:-1][m > 0]
            np.testing.assert_allclose(tradable, tradable[:1].repeat(tradable.size), rtol=1e-5)
    # the cash share moves with the state (randomised network), so the one number is not a constant
    assert np.ptp(agent.get_action(obs, deterministic=True)[:, -1]) > 0.02
    # the policy module (what export and serving run) is the network's mean action
    with torch.no_grad():
        ref = agent.policy_module()(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(ref, agent.get_action(obs, deterministic=True), atol=1e-6)


def test_a_sampled_action_maps_back_to_its_latent_and_log_prob():
    agent = exposure_agent()
    randomize(agent.net, 5)
    obs = torch.from_numpy(random_obs(agent.layout, 16, 6, p_open=1.0))
    with torch.no_grad():
        logits, _, mask1 = agent.net(obs)
        z = agent.net.sample_latent(logits, torch.Generator().manual_seed(1))
        logp, ent = agent.net.log_prob_entropy(logits, mask1, z)
        w = agent.net.weights_from_latent(z, mask1)
        back = alr_from_weights(w)
        logp_back, _ = agent.net.log_prob_entropy(logits, mask1, back)
    torch.testing.assert_close(logp_back, logp, atol=1e-4, rtol=1e-4)
    assert torch.all(ent == ent[0]) and ent.shape == (16,)


def test_ppo_with_an_exposure_head_moves_to_cash_when_the_sleeve_drifts_down():
    env = DriftVecEnv(num_envs=8, drift=-0.01, drift_vol=0.002, noise_vol=0.01)
    fast = dict(window=4, d_model=32, dim_feedforward=64, day_layers=1, init_log_std=0.0, n_steps=64,
                batch_size=128, n_epochs=10, learning_rate=1e-3, gamma=0.5, gae_lambda=0.9, target_kl=0.05)
    agent = PPOAgent(env.obs_dim, 4, seed=0, action_head="exposure", **fast)
    obs, _ = DriftVecEnv(num_envs=16).reset(seed=123)
    before = agent.get_action(obs, deterministic=True)[:, -1].mean()
    assert before < 0.35  # uniform at first: a quarter in cash
    agent.train(env, 8192)
    w = agent.get_action(obs, deterministic=True)
    assert w[:, -1].mean() > 0.8, w.mean(0)
    np.testing.assert_allclose(w[:, 0], w[:, 1], rtol=1e-5)  # still an equal-weight sleeve


def test_config_takes_the_head_for_every_encoder_and_refuses_an_unknown_one():
    from data.market import DataError
    from training.config import validate_agent_params

    assert validate_agent_params("ppo", {"action_head": "exposure"}).action_head == "exposure"
    assert validate_agent_params("ppo", {"action_head": "exposure", "encoder": "lstm"}).encoder == "lstm"
    assert PPOConfig().action_head == "assets"
    with pytest.raises(DataError, match="agent.ppo is invalid: PPOConfig.action_head must be one of"):
        validate_agent_params("ppo", {"action_head": "sleeves"})


@pytest.mark.parametrize("encoder", ["transformer", "lstm", "mlp"])
def test_save_load_and_export_parity_of_an_exposure_policy(encoder, tmp_path):
    from deployment.model_export import main

    layout = ObsLayout(3, 3, 4)
    agent = exposure_agent(layout, encoder=encoder)
    randomize(agent.net, 7)
    save_agent(agent, tmp_path / "run")
    back = load_agent(tmp_path / "run")
    assert back.config.action_head == "exposure"
    obs = random_obs(layout, 8, 9)
    np.testing.assert_array_equal(back.get_action(obs, deterministic=True), agent.get_action(obs, deterministic=True))
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({
        "tickers": ["A", "B", "C"], "categories": ["growth", "hedge", "stable"],
        "feature_names": ["f0", "f1", "f2", "f3"], "norm": {"mean": [0.0] * 4, "std": [1.0] * 4}}))
    assert main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "export"), "--n-obs", "200"]) == 0
    report = json.loads((tmp_path / "export" / "parity.json").read_text())
    assert report["passed"] and max(report["max_abs_diff"].values()) <= 1e-5
    assert set(report["max_abs_diff"]) == {"torchscript", "onnx", "saved_model", "tf_onnx", "onnx_split",
                                           "torchscript_split"}
