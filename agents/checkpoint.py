"""Torch files on disk without pickle: atomic saves, weights-only loads and the one ``load_checkpoint``.

A checkpoint is the agent's full training state as plain types and tensors (``agent.checkpoint_state()``:
``model``, optimiser state, RNG states, ``global_step``, ``config`` as a mapping, ``obs_layout``, and the
replay buffer's arrays for the off-policy agents). ``load_checkpoint(AgentClass, path, env)`` rebuilds the
agent from it; agents' ``load_checkpoint`` class methods call this function.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from agents.common import ObsLayout
from data.atomic_files import atomic_write_bytes


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through an in-memory buffer, written to a temp file in the same folder, then renamed.

    The buffer matters: ``torch.save`` names the zip archive's root folder after the file it writes, so
    saving straight to a randomly named temp file made identical state dicts differ in bytes. A buffer
    always gets the same root, so the same weights give the same file bit for bit.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` (tensors, dicts, lists, numbers, strings; never pickled objects)."""
    if not Path(path).is_file():
        raise ValueError(f"'{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise ValueError(f"'{path}' is not a readable weights-only torch file ({type(err).__name__})") from None


def load_checkpoint(agent_class: type, path: str | os.PathLike, env: Any | None = None, device: str = "cpu") -> Any:
    """Rebuild an ``agent_class`` agent from ``save_checkpoint`` output (weights-only load, no pickle).

    The state is read on the CPU and the agent built on ``device`` (``auto``, ``cpu``, ``cuda``), so a checkpoint
    written on any device loads on any other. ``env`` is needed only by replay buffers that store day indices
    (they rebuild windows from the env's feature array); a missing key or a state that does not fit the agent raises ``ValueError``.
    """
    state = safe_torch_load(path)
    if not isinstance(state, dict) or "obs_layout" not in state or "config" not in state:
        raise ValueError(f"'{path}' is not a training checkpoint (no obs_layout/config)")
    layout = ObsLayout.from_dict(state["obs_layout"])
    agent = agent_class(layout.obs_dim, layout.action_dim, layout=layout, device=device, **state["config"])
    try:
        agent.load_checkpoint_state(state, env)
    except (KeyError, RuntimeError) as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"'{path}' does not fit a {agent_class.__name__} ({first})") from None
    return agent
