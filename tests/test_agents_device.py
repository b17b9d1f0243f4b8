"""--device auto|cpu|cuda: one resolver, one argparse type, agents built and reloaded on a device.

The tests run on CPU machines; a missing GPU is simulated so the refusal is checked everywhere.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from test_agents_env import DriftVecEnv

from agents.common import device_argument, resolve_device
from agents.ddpg_agent import DDPGAgent
from agents.ppo_agent import PPOAgent
from agents.sac_agent import SACAgent

torch.set_num_threads(1)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_resolver_maps_auto_to_cpu_without_a_gpu_and_refuses_cuda_in_one_sentence(no_gpu):
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="^device 'cuda' was asked for but this machine has no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, got 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(argparse.ArgumentTypeError, match="no CUDA GPU"):
        device_argument("cuda")
    assert device_argument("auto") == "cpu"


@pytest.mark.parametrize("module", ["training.train", "training.walk_forward", "training.hyperparameter_tuning",
                                    "evaluation.backtester", "deployment.pipeline"])
def test_every_command_line_refuses_cuda_without_a_gpu_with_exit_2(no_gpu, module, capsys, tmp_path):
    import importlib

    with pytest.raises(SystemExit) as exc:
        importlib.import_module(module).main(["--device", "cuda", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith("argument --device: device 'cuda' was asked for but this machine has no CUDA GPU "
                        "visible to torch")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cls", [PPOAgent, SACAgent, DDPGAgent])
def test_agents_take_a_device_and_checkpoints_load_onto_one(cls, tmp_path):
    env = DriftVecEnv(num_envs=2)
    cfg = dict(window=4, seed=1)
    cfg.update(dict(n_steps=8, batch_size=8, n_epochs=1, d_model=16, n_heads=2) if cls is PPOAgent
               else dict(hidden=8, lstm_layers=1, learning_starts=8, batch_size=8))
    agent = cls(env.obs_dim, 4, device="cpu", **cfg)
    agent.train(env, 32)
    agent.save_checkpoint(tmp_path / "ckpt.pt")
    again = cls.load_checkpoint(str(tmp_path / "ckpt.pt"), device="auto") if cls is PPOAgent else \
        cls.load_checkpoint(str(tmp_path / "ckpt.pt"), env, device="auto")
    obs, _ = DriftVecEnv(num_envs=3).reset(seed=5)
    np.testing.assert_array_equal(again.get_action(obs, deterministic=True), agent.get_action(obs, deterministic=True))
    assert next(agent.policy_module().parameters()).device.type == "cpu"
