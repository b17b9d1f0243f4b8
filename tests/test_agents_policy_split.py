"""The deterministic policy split into a market-only part and a portfolio part (the serving contract).

Every policy module (PPO Transformer / LSTM / MLP, SAC, DDPG) has ``market(features (B, W, N, F))`` and
``act(market, weights (B, N+1), mask (B, N)) -> weights (B, N+1)`` with ``forward(obs) ==
act(market(features), weights, mask)``; both methods compile with TorchScript (script and trace) and export
to ONNX as separate graphs.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from agents.common import ObsLayout
from agents.ddpg_agent import DDPGAgent
from agents.ppo_agent import PPOAgent
from agents.sac_agent import SACAgent

torch.set_num_threads(1)

LAYOUT = ObsLayout(5, 3, 2)
OFF = dict(hidden=8, lstm_layers=2, window=5)


def policy(kind: str) -> torch.nn.Module:
    lay = LAYOUT
    if kind in ("transformer", "lstm", "mlp"):
        agent = PPOAgent(lay.obs_dim, lay.action_dim, layout=lay, encoder=kind, window=5, d_model=16, n_heads=2,
                         dim_feedforward=32, lstm_layers=2, seed=1)
    else:
        agent = (SACAgent if kind == "sac" else DDPGAgent)(lay.obs_dim, lay.action_dim, layout=lay, seed=1, **OFF)
    module = agent.policy_module()
    gen = torch.Generator().manual_seed(7)  # far from the near-uniform initial policy
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.4)
    return module


def observations(b: int = 6) -> torch.Tensor:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((b, LAYOUT.window, LAYOUT.n_assets, LAYOUT.n_features)).astype(np.float32)
    w = rng.dirichlet(np.ones(LAYOUT.action_dim), size=b).astype(np.float32)
    mask = np.ones((b, LAYOUT.n_assets), np.float32)
    mask[1, 0] = mask[2, 1:] = 0.0
    return torch.from_numpy(LAYOUT.join_numpy(feats, w, mask))


KINDS = ["transformer", "lstm", "mlp", "sac", "ddpg"]


@pytest.mark.parametrize("kind", KINDS)
def test_forward_equals_act_of_market_and_market_ignores_the_portfolio(kind):
    module = policy(kind)
    obs = observations()
    features, weights, mask = LAYOUT.split(obs)
    with torch.no_grad():
        full = module(obs)
        market = module.market(features)
        split = module.act(market, weights, mask)
        # the market latent of the same window is the same for any portfolio
        other = LAYOUT.split(observations()[torch.tensor([0, 0, 0, 0, 0, 0])])[0]
        m0 = module.market(other)
    torch.testing.assert_close(split, full, atol=1e-6, rtol=0)
    assert market.shape[:2] == (6, LAYOUT.action_dim)
    torch.testing.assert_close(m0, market[:1].expand_as(m0), atol=1e-6, rtol=0)
    assert torch.all(split[1, 0] == 0) and torch.all(split[2, 1:3] == 0)
    torch.testing.assert_close(split.sum(-1), torch.ones(6))


@pytest.mark.parametrize("kind", KINDS)
def test_market_and_act_compile_with_torchscript_and_export_to_onnx_as_separate_graphs(kind):
    import onnxruntime as ort

    module = policy(kind)
    obs = observations()
    features, weights, mask = LAYOUT.split(obs)
    with torch.no_grad():
        market = module.market(features)
        ref = module.act(market, weights, mask)
        scripted = torch.jit.script(module)
        torch.testing.assert_close(scripted.act(scripted.market(features), weights, mask), ref, atol=1e-6, rtol=0)
        torch.testing.assert_close(scripted(obs), ref, atol=1e-6, rtol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace_module(module, {"market": (features,), "act": (market, weights, mask)},
                                            check_trace=False)
        torch.testing.assert_close(traced.act(traced.market(features), weights, mask), ref, atol=1e-6, rtol=0)

    class Market(torch.nn.Module):
        def __init__(self, p: torch.nn.Module) -> None:
            super().__init__()
            self.p = p

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.p.market(x)

    class Act(Market):
        def forward(self, x: torch.Tensor, w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return self.p.act(x, w, m)

    outputs = []
    for graph, args, names in ((Market(module), (features,), ["features"]),
                               (Act(module), (market, weights, mask), ["market", "weights", "mask"])):
        buf = io.BytesIO()
        # with gradients on, nn.TransformerEncoderLayer traces plain ops (its fused kernel has no ONNX symbolic)
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, args, buf, opset_version=17, input_names=names, dynamo=False,
                              dynamic_axes={n: {0: "batch"} for n in names})
        sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
        feeds = {n: a.detach().numpy() if n != "market" else outputs[0] for n, a in zip(names, args)}
        outputs.append(sess.run(None, feeds)[0])
    np.testing.assert_allclose(outputs[1], ref.numpy(), atol=1e-5)


def test_state_dict_keys_are_unchanged_by_the_split():
    """Old checkpoints load: the split adds no parameters or buffers."""
    module = policy("transformer")
    keys = set(module.state_dict())
    assert "net.day_proj.weight" in keys and "net.pos" in keys and "net.weight_proj.weight" in keys
    assert not any(k.startswith(("market", "act")) for k in keys)
    assert set(policy("sac").state_dict()) == {f"encoder.{k}" for k in policy("sac").encoder.state_dict()} | {
        f"actor.{k}" for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")}
