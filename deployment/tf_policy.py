"""The deterministic policies' forward passes re-written in TensorFlow, weights copied from PyTorch.

No retraining and no ONNX round trip: each builder reads the PyTorch state dict (numpy arrays keyed like
``day_proj.weight``) and writes the same arithmetic with TensorFlow ops, following the architecture
documented in ``agents/transformer_encoder.py`` (PPO-Transformer), ``agents/lstm_extractor.py`` (SAC/DDPG
actors, PPO-LSTM) and ``agents/ppo_encoders.py`` (PPO-MLP).
The result is a ``tf.Module`` whose ``allocate(obs)`` maps obs float32 [B, obs_dim] to
``{"weights": float32 [B, N+1]}`` (last = cash), saved with a named ``allocate`` signature.

TensorFlow is imported inside functions only (``import agents`` / ``import deployment`` stay TF-free).
PyTorch conventions honoured: ``nn.Linear`` computes ``x @ W.T + b``; ``nn.LayerNorm`` eps 1e-5 with
biased variance; ``nn.MultiheadAttention`` packs q, k, v in ``in_proj_weight`` [3d, d] and scales scores
by ``1/sqrt(d/heads)``; ``nn.LSTM`` gate order is input, forget, cell (g), output.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from agents.common import MASKED_LOGIT, ObsLayout

SIGNATURE = "allocate"
LN_EPS = 1e-5


def _tf():
    from data.tf_pipeline import import_tensorflow  # quiet start-up, one place

    return import_tensorflow()


def _linear(x, w, b):
    tf = _tf()
    return tf.linalg.matmul(x, w, transpose_b=True) + b


def _layer_norm(x, gamma, beta):
    tf = _tf()
    mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)
    return (x - mean) * tf.math.rsqrt(var + LN_EPS) * gamma + beta


def _mha(x, p: dict, n_heads: int):
    """Self-attention of ``x`` [B, T, d] with PyTorch's packed projections in ``p``."""
    tf = _tf()
    d = int(p["in_proj_weight"].shape[1])
    dh = d // n_heads
    qkv = _linear(x, p["in_proj_weight"], p["in_proj_bias"])  # [B,T,3d]
    b, t = tf.shape(x)[0], tf.shape(x)[1]

    def heads(z):
        return tf.transpose(tf.reshape(z, [b, t, n_heads, dh]), [0, 2, 1, 3])  # [B,h,T,dh]

    q, k, v = heads(qkv[..., :d]), heads(qkv[..., d : 2 * d]), heads(qkv[..., 2 * d :])
    scores = tf.linalg.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(dh))
    att = tf.linalg.matmul(tf.nn.softmax(scores, axis=-1), v)  # [B,h,T,dh]
    out = tf.reshape(tf.transpose(att, [0, 2, 1, 3]), [b, t, d])
    return _linear(out, p["out_proj.weight"], p["out_proj.bias"])


def _encoder_layer(x, p: dict, n_heads: int):
    """Pre-norm ``nn.TransformerEncoderLayer`` (relu, eval mode): x + SA(LN1 x), then x + FF(LN2 x)."""
    tf = _tf()
    x = x + _mha(_layer_norm(x, p["norm1.weight"], p["norm1.bias"]), p, n_heads)
    h = _layer_norm(x, p["norm2.weight"], p["norm2.bias"])
    h = _linear(tf.nn.relu(_linear(h, p["linear1.weight"], p["linear1.bias"])), p["linear2.weight"],
                p["linear2.bias"])
    return x + h


def masked_softmax_tf(logits, mask1):
    """TF twin of ``agents.common.masked_softmax``: logits, mask1 [B, N+1] -> weights [B, N+1]."""
    tf = _tf()
    keep = mask1 > 0.5
    z = tf.where(keep, logits, tf.fill(tf.shape(logits), tf.constant(MASKED_LOGIT, logits.dtype)))
    w = tf.nn.softmax(z, axis=-1) * tf.cast(keep, logits.dtype)
    return w / tf.maximum(tf.reduce_sum(w, axis=-1, keepdims=True), 1e-12)


def _split(obs, layout: ObsLayout):
    tf = _tf()
    fd, n = layout.feature_dim, layout.n_assets
    feats = tf.reshape(obs[:, :fd], [-1, layout.window, n, layout.n_features])
    weights = obs[:, fd : fd + n + 1]
    mask = obs[:, fd + n + 1 : fd + 2 * n + 1]
    mask1 = tf.concat([mask, tf.ones_like(mask[:, :1])], axis=1)
    return feats, weights, mask1


def _group(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _n_layers(state: dict[str, Any], prefix: str) -> int:
    idx = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return len(idx)


class _VarStore:
    """Turns numpy arrays into named non-trainable ``tf.Variable`` s kept on a ``tf.Module``."""

    def __init__(self, module, state: dict[str, np.ndarray]) -> None:
        tf = _tf()
        module._vars = []
        self.vars = {}
        for key, value in state.items():
            var = tf.Variable(np.asarray(value, dtype=np.float32), trainable=False,
                              name=re.sub(r"[^A-Za-z0-9_]", "_", key))
            module._vars.append(var)
            self.vars[key] = var


def transformer_policy(state: dict[str, np.ndarray], layout: ObsLayout, n_heads: int, exposure: bool = False):
    """TF module of ``agents.transformer_encoder.PolicyModule`` from ``TransformerActorCritic`` weights.

    ``state``: the network's state dict as float32 numpy arrays (keys without a ``net.`` prefix).
    ``exposure``: the network's exposure head (``PPOConfig.action_head == "exposure"``): the cash token's
    logit s on every asset and 0 for cash.
    """
    tf = _tf()

    class TransformerPolicyTF(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="transformer_policy")
            v = _VarStore(self, state).vars
            self._v = v
            self._day = [_group(v, f"day_encoder.layers.{i}.self_attn.") | _group(v, f"day_encoder.layers.{i}.")
                         for i in range(_n_layers(v, "day_encoder.layers."))]
            self._asset = [_group(v, f"asset_encoder.layers.{i}.self_attn.")
                           | _group(v, f"asset_encoder.layers.{i}.")
                           for i in range(_n_layers(v, "asset_encoder.layers."))]

        @tf.function(input_signature=[tf.TensorSpec([None, layout.obs_dim], tf.float32, name="obs")],
                     autograph=False)
        def allocate(self, obs):
            v = self._v
            feats, weights, mask1 = _split(obs, layout)
            x = _linear(tf.reshape(feats, [-1, layout.window, layout.n_assets * layout.n_features]),
                        v["day_proj.weight"], v["day_proj.bias"]) + v["pos"]
            for p in self._day:
                x = _encoder_layer(x, p, n_heads)
            x = _layer_norm(x, v["day_norm.weight"], v["day_norm.bias"])
            context = x[:, -1]
            assets = _linear(feats[:, -1], v["asset_proj.weight"], v["asset_proj.bias"])  # [B,N,d]
            cash = tf.tile(tf.reshape(v["cash_token"], [1, 1, -1]), [tf.shape(obs)[0], 1, 1])
            tok = tf.concat([assets, cash], axis=1)
            tok = (tok + v["asset_embed"] + _linear(weights[..., None], v["weight_proj.weight"],
                                                   v["weight_proj.bias"]) + context[:, None, :])
            for p in self._asset:
                tok = _encoder_layer(tok, p, n_heads)
            tok = _layer_norm(tok, v["asset_norm.weight"], v["asset_norm.bias"])
            logits = _linear(tok, v["actor_head.weight"], v["actor_head.bias"])[..., 0]
            if exposure:
                s = logits[:, -1:]
                logits = tf.concat([tf.tile(s, [1, layout.n_assets]), tf.zeros_like(s)], axis=1)
            return {"weights": masked_softmax_tf(logits, mask1)}

    return TransformerPolicyTF()


def _lstm_layer(x, w_ih, w_hh, b_ih, b_hh, steps: int):
    """One ``nn.LSTM`` layer (zero initial state) over x [B, T, In] -> outputs [B, T, H], unrolled."""
    tf = _tf()
    hid = int(w_hh.shape[1])
    xw = _linear(x, w_ih, b_ih + b_hh)  # [B,T,4H], input part of every step at once
    h = tf.zeros([tf.shape(x)[0], hid], x.dtype)
    c = tf.zeros_like(h)
    outs = []
    for t in range(steps):
        gates = xw[:, t] + tf.linalg.matmul(h, w_hh, transpose_b=True)
        i, f, g, o = tf.split(gates, 4, axis=-1)  # PyTorch order: input, forget, cell, output
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        outs.append(h)
    return tf.stack(outs, axis=1)


def lstm_policy(state: dict[str, np.ndarray], layout: ObsLayout, cash_reference: bool, exposure: bool = False):
    """TF module of ``agents.off_policy.LSTMPolicyModule`` (SAC/DDPG deterministic actor).

    ``state``: the policy module's state dict (``encoder.fc.*``, ``encoder.lstm.*_l{k}``, ``actor.fc1.*``,
    ``actor.fc2.*``) as float32 numpy arrays. ``cash_reference`` True (SAC): the cash logit is 0.
    ``exposure``: PPO-LSTM's exposure head (``agents.distributions.pooled_exposure_logits``).
    """
    tf = _tf()
    n_layers = len({k for k in state if k.startswith("encoder.lstm.weight_ih_l")})
    w, n, f = layout.window, layout.n_assets, layout.n_features

    class LSTMPolicyTF(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="lstm_policy")
            self._v = _VarStore(self, state).vars

        @tf.function(input_signature=[tf.TensorSpec([None, layout.obs_dim], tf.float32, name="obs")],
                     autograph=False)
        def allocate(self, obs):
            v = self._v
            feats, weights, mask1 = _split(obs, layout)
            x = tf.reshape(tf.transpose(feats, [0, 2, 1, 3]), [-1, w, f])  # one sequence per asset
            x = tf.nn.leaky_relu(_linear(x, v["encoder.fc.weight"], v["encoder.fc.bias"]), alpha=0.01)
            for k in range(n_layers):
                x = _lstm_layer(x, v[f"encoder.lstm.weight_ih_l{k}"], v[f"encoder.lstm.weight_hh_l{k}"],
                                v[f"encoder.lstm.bias_ih_l{k}"], v[f"encoder.lstm.bias_hh_l{k}"], w)
            hid = int(v["encoder.fc.weight"].shape[0])
            latent = tf.reshape(x[:, -1], [-1, n, hid])
            return {"weights": _asset_score_weights(v, latent, weights, mask1, cash_reference, exposure)}

    return LSTMPolicyTF()


def _asset_score_weights(v: dict, latent, weights, mask1, cash_reference: bool, exposure: bool = False):
    """``AssetScoreHead`` (``actor.fc1``/``actor.fc2``) on asset latents [B, N, H] + a zero cash row, then
    the masked softmax of ``LSTMPolicyModule``: weights [B, N+1]."""
    tf = _tf()
    latent = tf.concat([latent, tf.zeros_like(latent[:, :1])], axis=1)  # cash row: zero embedding
    h = tf.concat([latent, weights[..., None]], axis=-1)
    h = tf.nn.leaky_relu(_linear(h, v["actor.fc1.weight"], v["actor.fc1.bias"]), alpha=0.01)
    out = _linear(h, v["actor.fc2.weight"], v["actor.fc2.bias"])[..., 0]  # [B,N+1]
    if cash_reference:
        out = tf.concat([out[:, :-1], tf.zeros_like(out[:, :1])], axis=1)
    if exposure:  # the mean over the tradable assets minus the cash row, on every asset; cash 0
        m = tf.cast(mask1[:, :-1] > 0.5, out.dtype)
        mean = tf.reduce_sum(out[:, :-1] * m, axis=1, keepdims=True) / tf.maximum(tf.reduce_sum(m, 1, keepdims=True), 1.0)
        s = mean - out[:, -1:]
        out = tf.concat([tf.tile(s, [1, tf.shape(m)[1]]), tf.zeros_like(s)], axis=1)
    return masked_softmax_tf(out, mask1)


def mlp_policy(state: dict[str, np.ndarray], layout: ObsLayout, exposure: bool = False):
    """TF module of PPO-MLP's deterministic policy (``LSTMPolicyModule`` around ``agents.ppo_encoders.MLPExtractor``).

    ``state``: the policy module's state dict (``encoder.net.{2k}.weight/bias`` for the k-th dense layer,
    each followed by LeakyReLU(0.01); ``actor.fc1.*``, ``actor.fc2.*``) as float32 numpy arrays. The cash
    logit comes from the actor head like any asset's (no cash reference).
    """
    tf = _tf()
    layers = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.net\.(\d+)\.weight$", k))})
    w, n, f = layout.window, layout.n_assets, layout.n_features

    class MLPPolicyTF(tf.Module):
        def __init__(self) -> None:
            super().__init__(name="mlp_policy")
            self._v = _VarStore(self, state).vars

        @tf.function(input_signature=[tf.TensorSpec([None, layout.obs_dim], tf.float32, name="obs")],
                     autograph=False)
        def allocate(self, obs):
            v = self._v
            feats, weights, mask1 = _split(obs, layout)
            x = tf.reshape(tf.transpose(feats, [0, 2, 1, 3]), [-1, n, w * f])  # one flat window per asset
            for k in layers:
                x = tf.nn.leaky_relu(_linear(x, v[f"encoder.net.{k}.weight"], v[f"encoder.net.{k}.bias"]),
                                     alpha=0.01)
            return {"weights": _asset_score_weights(v, x, weights, mask1, False, exposure)}

    return MLPPolicyTF()


def save_tf_policy(module, out_dir: str) -> None:
    """``tf.saved_model.save`` with the named ``allocate`` signature (also the serving default)."""
    tf = _tf()
    fn = module.allocate.get_concrete_function()
    tf.saved_model.save(module, out_dir, signatures={SIGNATURE: fn, "serving_default": fn})


def run_saved_model(saved_dir: str, obs: np.ndarray, batch: int = 256) -> np.ndarray:
    """Load ``saved_dir`` with ``tf.saved_model.load`` and run its ``allocate`` signature: (B, N+1)."""
    tf = _tf()
    sig = tf.saved_model.load(saved_dir).signatures[SIGNATURE]
    outs = [sig(obs=tf.constant(obs[i : i + batch]))["weights"].numpy() for i in range(0, len(obs), batch)]
    return np.concatenate(outs, axis=0)


def saved_model_to_onnx(saved_dir: str, out_path: str, opset: int = 17) -> None:
    """Convert the SavedModel's ``allocate`` signature to ONNX with tf2onnx (dynamic batch)."""
    tf = _tf()
    import tf2onnx

    loaded = tf.saved_model.load(saved_dir)
    sig = loaded.signatures[SIGNATURE]
    spec = sig.structured_input_signature[1]["obs"]

    @tf.function(input_signature=[tf.TensorSpec(spec.shape, tf.float32, name="obs")], autograph=False)
    def allocate(obs):
        return {"weights": tf.identity(sig(obs=obs)["weights"], name="weights")}

    tf2onnx.convert.from_function(allocate, input_signature=allocate.input_signature, opset=opset,
                                  output_path=out_path)
