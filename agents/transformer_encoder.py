"""The PPO policy network: a day-then-asset Transformer encoder with an actor and a critic head.

Exact forward pass of ``TransformerActorCritic`` for obs float32 (B, obs_dim) (shapes in brackets;
W = window, N = assets, F = features per asset, d = ``d_model``; all layers are plain ``torch.nn`` ones,
so the state dict maps one-to-one onto another framework):

1. ``features, weights, mask = layout.split(obs)``  -> [B,W,N,F], [B,N+1], [B,N]; ``mask1 = [mask, 1]``.
2. Day tokens (which days matter): ``x = day_proj(features.reshape(B, W, N*F))`` [B,W,d]
   (``nn.Linear(N*F, d)``), plus the fixed sinusoidal positional encoding buffer ``pos`` [W,d]
   (``pos[t, 2k] = sin(t / 10000^(2k/d))``, ``pos[t, 2k+1] = cos(...)``, t = 0 oldest day).
3. ``x = day_encoder(x)``: ``day_layers`` x ``nn.TransformerEncoderLayer(d, n_heads, dim_feedforward,
   dropout, activation="relu", batch_first=True, norm_first=True)``; then ``day_norm`` (LayerNorm).
   Context ``c = x[:, -1]`` [B,d]: the most recent day's token, which attended over the whole window.
4. Asset tokens (which assets matter), one per asset plus one for cash:
   ``tok[:, i] = asset_proj(features[:, -1, i, :])`` for i < N (``nn.Linear(F, d)`` on the latest day),
   ``tok[:, N] = cash_token`` (learned [d]); the market tokens ``market = tok + asset_embed[None] +
   c[:, None]`` (``asset_embed`` learned [N+1,d]) depend on the features window only; then the portfolio
   enters: ``tok = market + weight_proj(weights[..., None])`` (``weight_proj = nn.Linear(1, d)``).
5. ``tok = asset_norm(asset_encoder(tok))``: ``asset_layers`` encoder layers configured as in 3, no mask
   in attention (a closed market still carries information), then LayerNorm.
6. Actor: ``logits = actor_head(tok)[..., 0]`` [B,N+1] (``nn.Linear(d, 1)`` shared across tokens). With
   ``action_head="exposure"`` only the cash token's output s is kept: ``logits = [s, ..., s, 0]``, an
   equal-weight sleeve over the tradable assets scaled against cash (one number per day to learn).
   Critic: ``value = critic_head(cat([c, tok.mean(1)], -1))[..., 0]`` [B] with
   ``critic_head = Sequential(Linear(2d, d), Tanh, Linear(d, 1))``.

Action distribution (the choice, and its log-probability): a logistic-normal over the simplex in
additive-log-ratio coordinates with cash as the reference. The mean is ``mu = logits[:, :N] -
logits[:, N:]`` [B,N]; the latent ``z ~ Normal(mu, exp(log_std))`` with a learned state-independent
``log_std`` [N]; the weights are ``masked_softmax([z, 0], mask1)``. This map is a bijection between R^K
and the open simplex over the K tradable assets plus cash, so the weights an env received can be mapped
back exactly (``z_i = log w_i - log w_cash``). PPO needs only ratios of densities of the same action, so
the log-probability is taken in z coordinates, summed over tradable assets only:
``log pi(a|s) = sum_i mask_i * log Normal(z_i; mu_i, sigma_i)`` (the softmax Jacobian cancels in the
ratio); the entropy bonus is the matching ``sum_i mask_i * (0.5 + 0.5 log 2 pi + log sigma_i)``.
Masked assets get no weight: their z is ignored and their softmax entry is exactly 0. An exposure head's
latent is one-dimensional: one draw ``eps`` (B, 1) on every coordinate, ``z = mu + exp(log_std_0) * eps``,
density and entropy of that single Gaussian (``agents.distributions.shared_log_prob``).

Deterministic policy (``PolicyModule``): ``weights = masked_softmax(logits, mask1)`` (= the weights at
``z = mu``), float32 [B,N+1], no data-dependent Python control flow: scriptable, traceable and exportable
to ONNX (opset 17). It splits into ``market(features) -> market tokens`` (steps 1-4 without the weights,
once per day) and ``act(market, weights, mask) -> weights`` (steps 4-6), so a server can compute the
market part once per day and answer every portfolio from it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from agents import distributions as D
from agents.common import ObsLayout, full_mask, masked_softmax, split_obs

#: ``action_head`` values: per-asset logits (the full simplex) or one exposure logit (risky sleeve vs cash).
ACTION_HEADS = ("assets", "exposure")


def sinusoidal_positions(length: int, d_model: int) -> torch.Tensor:
    """Fixed sinusoidal encoding (length, d_model): even columns sin, odd columns cos (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model))
    pe = torch.zeros(length, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
    return pe.float()


def _encoder_layer(d_model: int, n_heads: int, dim_feedforward: int, dropout: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        d_model, n_heads, dim_feedforward, dropout, activation="relu", batch_first=True, norm_first=True
    )


def _init_linear(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class TransformerActorCritic(nn.Module):
    """Day-then-asset Transformer with a logistic-normal actor and a state-value critic (see module doc)."""

    def __init__(
        self,
        layout: ObsLayout,
        d_model: int = 64,
        n_heads: int = 4,
        day_layers: int = 2,
        asset_layers: int = 1,
        dim_feedforward: int = 128,
        dropout: float = 0.0,
        init_log_std: float = -0.5,
        action_head: str = "assets",
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0 or d_model % 2 != 0:
            raise ValueError(f"d_model {d_model} must be even and divisible by n_heads {n_heads}")
        if action_head not in ACTION_HEADS:
            raise ValueError(f"action_head must be one of {', '.join(ACTION_HEADS)}, got {action_head!r}")
        self.layout = layout
        self.exposure = action_head == "exposure"  # a bool, not a string: TorchScript branches on it
        n, f, w = layout.n_assets, layout.n_features, layout.window
        self.window, self.n_assets, self.n_features = w, n, f  # ints for TorchScript (``split_obs``)
        self.d_model = d_model
        self.day_proj = nn.Linear(n * f, d_model)
        self.register_buffer("pos", sinusoidal_positions(w, d_model))
        self.day_encoder = nn.TransformerEncoder(
            _encoder_layer(d_model, n_heads, dim_feedforward, dropout), day_layers, enable_nested_tensor=False
        )
        self.day_norm = nn.LayerNorm(d_model)
        self.asset_proj = nn.Linear(f, d_model)
        self.cash_token = nn.Parameter(torch.zeros(d_model))
        self.asset_embed = nn.Parameter(torch.randn(n + 1, d_model) * 0.02)
        self.weight_proj = nn.Linear(1, d_model)
        self.asset_encoder = nn.TransformerEncoder(
            _encoder_layer(d_model, n_heads, dim_feedforward, dropout), asset_layers, enable_nested_tensor=False
        )
        self.asset_norm = nn.LayerNorm(d_model)
        self.actor_head = _init_linear(nn.Linear(d_model, 1), 0.01)
        self.critic_head = nn.Sequential(
            _init_linear(nn.Linear(2 * d_model, d_model), math.sqrt(2)),
            nn.Tanh(),
            _init_linear(nn.Linear(d_model, 1), 1.0),
        )
        self.log_std = nn.Parameter(torch.full((n,), float(init_log_std)))

    # -- the forward pass, split so the attention maps can reuse it ------------------------------------
    def _day_tokens(self, features: torch.Tensor) -> torch.Tensor:
        b = features.shape[0]
        x = self.day_proj(features.reshape(b, features.shape[1], -1))
        return x + self.pos

    def _context_full(self, features: torch.Tensor) -> torch.Tensor:
        """Step 3 as written: every token through every day layer; context (B, d) = the latest day's."""
        return self.day_norm(self.day_encoder(self._day_tokens(features)))[:, -1]

    def _day_context(self, x: torch.Tensor) -> torch.Tensor:
        """Day tokens x (B, W, d) -> context (B, d), computing only what the latest day's token needs.

        Every layer but the last runs on all W tokens (they are the last layer's keys and values); the
        last layer computes keys and values for all tokens but the query, attention, output projection
        and feed-forward for the latest day only. Same function as ``_context_full``.
        """
        n_layers = len(self.day_encoder.layers)
        for i, layer in enumerate(self.day_encoder.layers):
            x = _pre_norm_layer(
                x, layer.norm1.weight, layer.norm1.bias, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias,
                layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias, layer.norm2.weight, layer.norm2.bias,
                layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias,
                self.d_model, layer.self_attn.num_heads, layer.norm1.eps, layer.dropout.p, self.training,
                i == n_layers - 1)
        return self.day_norm(x)

    def _context(self, features: torch.Tensor) -> torch.Tensor:
        """features (B, W, N, F) -> context (B, d): the day encoder's token of the latest day."""
        return self._day_context(self._day_tokens(features))

    def _market_tokens(self, latest: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Latest day's features (B, N, F) and context (B, d) -> market tokens (B, N+1, d) (no weights yet)."""
        assets = self.asset_proj(latest)  # [B,N,d]
        cash = self.cash_token.expand(latest.shape[0], 1, -1)
        tok = torch.cat([assets, cash], dim=1)
        return tok + self.asset_embed + context.unsqueeze(1)

    def _asset_tokens(self, features: torch.Tensor, weights: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Step 4 of the module doc: market tokens + ``weight_proj(weights)`` (B, N+1, d)."""
        return self._market_tokens(features[:, -1], context) + self.weight_proj(weights.unsqueeze(-1))

    def market(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Market-only part: features (B, W, N, F) -> market tokens (B, N+1, d), context (B, d).

        Depends on the features window only (not on weights or the mask), so it can be computed once
        per day and shared by every portfolio on that day.
        """
        context = self._context(features)
        return self._market_tokens(features[:, -1], context), context

    def heads(self, market: torch.Tensor, context: torch.Tensor, weights: torch.Tensor,
              mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Portfolio part: market tokens (B, N+1, d), context (B, d), weights (B, N+1), mask (B, N) ->
        actor logits (B, N+1), state value (B,), mask1 (B, N+1)."""
        tok = self.asset_norm(self._asset_layers(market + self.weight_proj(weights.unsqueeze(-1))))
        logits = self.actor_logits(tok)
        value = self.critic_head(torch.cat([context, tok.mean(dim=1)], dim=-1)).squeeze(-1)
        return logits, value, full_mask(mask)

    def actor_logits(self, tok: torch.Tensor) -> torch.Tensor:
        """Step 6's actor: asset tokens (B, N+1, d) -> logits (B, N+1); an exposure head keeps only the cash
        token's output s and returns ``[s, ..., s, 0]`` (``agents.distributions.exposure_logits``)."""
        logits = self.actor_head(tok).squeeze(-1)
        if self.exposure:
            return D.exposure_logits(logits)
        return logits

    def _asset_layers(self, x: torch.Tensor) -> torch.Tensor:
        """``asset_encoder(x)`` for asset tokens x (B, N+1, d), batch-first (``_pre_norm_layer``)."""
        for layer in self.asset_encoder.layers:
            x = _pre_norm_layer(
                x, layer.norm1.weight, layer.norm1.bias, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias,
                layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias, layer.norm2.weight, layer.norm2.bias,
                layer.linear1.weight, layer.linear1.bias, layer.linear2.weight, layer.linear2.bias,
                self.d_model, layer.self_attn.num_heads, layer.norm1.eps, layer.dropout.p, self.training, False)
        return x

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs (B, obs_dim) -> actor logits (B, N+1), state value (B,), mask1 (B, N+1)."""
        features, weights, mask = split_obs(obs, self.window, self.n_assets, self.n_features)
        market, context = self.market(features)
        return self.heads(market, context, weights, mask)

    def forward_reference(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` computed straightforwardly (every day token through every layer, once per window).

        The reference the per-day path is tested against, and the "before" of benchmarks/bench_training.py.
        """
        features, weights, mask = split_obs(obs, self.window, self.n_assets, self.n_features)
        context = self._context_full(features)
        market = self._market_tokens(features[:, -1], context)
        tok = self.asset_norm(self.asset_encoder(market + self.weight_proj(weights.unsqueeze(-1))))
        logits = self.actor_logits(tok)
        value = self.critic_head(torch.cat([context, tok.mean(dim=1)], dim=-1)).squeeze(-1)
        return logits, value, full_mask(mask)

    def forward_days(self, features: torch.Tensor, days: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor,
                     day_rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward`` for observations given as decision days of one feature array, per distinct day.

        features (T, N, F) the env's feature array; days (B,) int64 decision days (window = the W days
        ending there); weights (B, N+1); mask (B, N); ``day_rows`` (T, d) optional precomputed
        ``day_proj(features.reshape(T, N*F))`` (valid while the parameters do not change, e.g. during a
        rollout). The day projection runs once per distinct day of all the windows, the day encoder and
        the market tokens once per distinct decision day, then both are gathered per sample; only the
        portfolio part (``heads``) runs per sample. Equals ``forward`` on the rebuilt observations.
        """
        w = self.window
        ends, inverse = torch.unique(days, return_inverse=True)  # [E], [B]
        win = ends[:, None] + torch.arange(1 - w, 1, device=days.device)  # [E,W] day indices
        if day_rows is None:
            rows, row_of = torch.unique(win.reshape(-1), return_inverse=True)  # [U], [E*W]
            proj = self.day_proj(features[rows].reshape(rows.shape[0], -1))  # [U,d]
        else:
            proj, row_of = day_rows, win.reshape(-1)
        x = proj[row_of].reshape(ends.shape[0], w, -1) + self.pos
        context = self._day_context(x)
        market = self._market_tokens(features[ends], context)
        return self.heads(market[inverse], context[inverse], weights, mask)

    def day_rows(self, features: torch.Tensor) -> torch.Tensor:
        """``day_proj`` of every day of the feature array (T, N, F) -> (T, d), for ``forward_days``."""
        return self.day_proj(features.reshape(features.shape[0], -1))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.forward(obs)[1]

    # -- the distribution (agents.distributions) -------------------------------------------------------
    mean_latent = staticmethod(D.mean_latent)
    weights_from_latent = staticmethod(D.weights_from_latent)

    def log_prob_entropy(
        self, logits: torch.Tensor, mask1: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-density of latent z (B, N) and the entropy, both (B,), over tradable assets only."""
        mu = D.mean_latent(logits)
        m = mask1[:, :-1]
        if self.exposure:  # one shared draw, scale exp(log_std[0])
            return D.shared_log_prob(z, mu, self.log_std[:1], m), D.shared_entropy(self.log_std[:1], mu.shape[0])
        log_std = self.log_std.expand_as(mu)
        return D.latent_log_prob(z, mu, log_std, m), D.latent_entropy(log_std, m)

    def sample_latent(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + exp(log_std) * eps (B, N), eps drawn from ``generator``; an exposure head draws one eps
        (B, 1) per sample, scaled by exp(log_std[0]), on every coordinate."""
        mu = D.mean_latent(logits)
        if self.exposure:
            return mu + D.sample_noise(torch.Size((mu.shape[0], 1)), mu, generator) * self.log_std[:1].exp()
        return mu + D.sample_noise(mu.shape, mu, generator) * self.log_std.exp()

    # -- interpretation -------------------------------------------------------------------------------
    @torch.no_grad()
    def attention_maps(self, obs: torch.Tensor) -> dict[str, np.ndarray]:
        """Head-averaged attention of every layer for a batch of observations.

        Returns ``{"days": (B, day_layers, W, W), "assets": (B, asset_layers, N+1, N+1)}``: row q,
        column k is how much query token q attended to key token k (rows sum to 1). Day index W-1 is the
        latest day; ``days[:, -1, -1]`` is what the context token looked at. Asset index N is cash.
        """
        features, weights, _ = self.layout.split(obs)
        x, days = _run_with_attention(self.day_encoder, self._day_tokens(features))
        context = self.day_norm(x)[:, -1]
        _, assets = _run_with_attention(self.asset_encoder, self._asset_tokens(features, weights, context))
        return {"days": days.numpy(), "assets": assets.numpy()}


def _pre_norm_layer(x: torch.Tensor, norm1_w: torch.Tensor, norm1_b: torch.Tensor, in_w: torch.Tensor,
                    in_b: torch.Tensor, out_w: torch.Tensor, out_b: torch.Tensor, norm2_w: torch.Tensor,
                    norm2_b: torch.Tensor, lin1_w: torch.Tensor, lin1_b: torch.Tensor, lin2_w: torch.Tensor,
                    lin2_b: torch.Tensor, d: int, heads: int, eps: float, p: float, training: bool,
                    last_only: bool) -> torch.Tensor:
    """One ``nn.TransformerEncoderLayer(norm_first=True, activation="relu", batch_first=True)`` on x (B, T, d),
    given its parameters: ``x + SA(norm1(x))`` then ``+ FF(norm2(.))``, batch-first throughout (no
    sequence-first transposes or packed-projection copies).

    ``last_only``: return only the latest token's output (B, d): the query, attention output and
    feed-forward are computed for that token alone, keys and values for all T tokens.
    """
    b, t = x.shape[0], x.shape[1]
    dh = d // heads
    drop = p if training else 0.0
    h = F.layer_norm(x, (d,), norm1_w, norm1_b, eps)
    # q, k, v as strided views of the packed projection (no permuted copy; backward is one cat along d)
    if last_only:
        q = F.linear(h[:, -1:], in_w[:d], in_b[:d]).view(b, 1, heads, dh).transpose(1, 2)
        k, v = (u.view(b, t, heads, dh).transpose(1, 2) for u in F.linear(h, in_w[d:], in_b[d:]).split(d, -1))
        x = x[:, -1:]
    else:
        q, k, v = (u.view(b, t, heads, dh).transpose(1, 2) for u in F.linear(h, in_w, in_b).split(d, -1))
    a = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)  # [B,H,Tq,dh]
    x = x + F.dropout(F.linear(a.transpose(1, 2).reshape(b, -1, d), out_w, out_b), drop, training)
    ff = F.linear(F.dropout(F.relu(F.linear(F.layer_norm(x, (d,), norm2_w, norm2_b, eps), lin1_w, lin1_b)), drop,
                            training), lin2_w, lin2_b)
    x = x + F.dropout(ff, drop, training)
    return x[:, 0] if last_only else x


def _run_with_attention(encoder: nn.TransformerEncoder, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Re-run pre-norm encoder layers step by step, returning the output and (B, L, T, T) attention."""
    maps = []
    for layer in encoder.layers:
        h = layer.norm1(x)
        attn, w = layer.self_attn(h, h, h, need_weights=True, average_attn_weights=True)
        x = x + layer.dropout1(attn)
        h = layer.norm2(x)
        x = x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(h)))))
        maps.append(w)
    return x, torch.stack(maps, dim=1)


class PolicyModule(nn.Module):
    """Deterministic policy: obs float32 (B, obs_dim) -> weights float32 (B, N+1) on the simplex.

    ``forward(obs) == act(market(features), weights, mask)`` for ``features, weights, mask =
    layout.split(obs)``: ``market`` depends on the features window only. ``torch.jit.script(module)``
    compiles all three methods; ``torch.jit.trace_module(module, {"market": ..., "act": ...})`` traces
    them separately, and each exports to ONNX through a wrapper whose ``forward`` calls it.
    Masked assets get exactly 0; cash is never masked. Export-friendly: trace it under
    ``torch.no_grad()`` (in eval mode PyTorch's fused Transformer fast path runs only without grad, so a
    trace taken with grad enabled fails ``torch.jit.trace``'s re-run check); ONNX opset 17 via the
    TorchScript exporter (``dynamo=False``; the dynamo exporter needs ``onnxscript``).
    """

    def __init__(self, net: TransformerActorCritic) -> None:
        super().__init__()
        self.net = net
        self.window, self.n_assets, self.n_features = net.window, net.n_assets, net.n_features

    def market(self, features: torch.Tensor) -> torch.Tensor:
        """Market-only latent: features (B, W, N, F) -> tokens (B, N+1, d) (asset and cash tokens +
        ``asset_embed`` + the day encoder's context), independent of weights and mask."""
        return self.net.market(features)[0]

    def act(self, market: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """market (B, N+1, d), weights (B, N+1), mask (B, N) -> simplex weights (B, N+1)."""
        net = self.net
        tok = net.asset_norm(net._asset_layers(market + net.weight_proj(weights.unsqueeze(-1))))
        return masked_softmax(net.actor_logits(tok), full_mask(mask))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs (B, obs_dim) -> weights (B, N+1); equals ``act(market(features), weights, mask)``."""
        features, weights, mask = split_obs(obs, self.window, self.n_assets, self.n_features)
        return self.act(self.market(features), weights, mask)
