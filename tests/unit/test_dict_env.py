"""Dict observations through the vector env: batching per key, final observations per key, NaN
checks per key, uint8 images kept as uint8; and a short training run end to end."""

from __future__ import annotations

import pytest
import torch

from ppokit.config import EnvConfig
from ppokit.envs import GymVecEnv
from ppokit.errors import EnvError
from ppokit.trainer import Trainer
from ppokit_test_envs import DICT_OBS, DICT_OBS_MAX_STEPS

SEED = 10


def make(vectorization: str = "sync", num_envs: int = 2, **kwargs) -> GymVecEnv:
    env_id = f"ppokit_test_envs:{DICT_OBS}" if vectorization == "async" else DICT_OBS
    return GymVecEnv.from_config(
        EnvConfig(id=env_id, num_envs=num_envs, vectorization=vectorization, kwargs=kwargs)
    )


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_dict_observations_are_batched_per_key_with_final_observations(vectorization):
    env = make(vectorization)
    try:
        obs = env.reset(seed=SEED)
        assert set(obs) == {"state", "privileged", "image"}
        assert obs["state"].shape == (2, 3) and obs["state"].dtype == torch.float32
        assert obs["image"].shape == (2, 1, 12, 12) and obs["image"].dtype == torch.uint8
        assert obs["state"][:, 1].tolist() == [SEED, SEED + 1]
        actions = torch.zeros(2, 2)
        for t in range(1, DICT_OBS_MAX_STEPS + 1):
            step = env.step(actions)
            if t < DICT_OBS_MAX_STEPS:
                assert step.final_obs is None
                assert step.obs["state"][:, 0].tolist() == [t, t]
        # The time limit truncated both envs: obs restarted, final_obs holds the last ones.
        assert step.truncated.all() and not step.terminated.any()
        assert step.obs["state"][:, 0].tolist() == [0, 0]
        assert step.final_obs["state"][:, 0].tolist() == [DICT_OBS_MAX_STEPS] * 2
        assert step.final_obs["image"].dtype == torch.uint8
        assert (step.final_obs["image"] == DICT_OBS_MAX_STEPS).all()
        assert step.final_obs["privileged"][:, 1].tolist() == [-DICT_OBS_MAX_STEPS] * 2
    finally:
        env.close()


def test_nan_in_one_key_is_reported_with_the_key():
    env = make(nan_at=2)
    try:
        env.reset(seed=SEED)
        env.step(torch.zeros(2, 2))
        with pytest.raises(EnvError, match="observation key 'privileged'.*NaN"):
            env.step(torch.zeros(2, 2))
    finally:
        env.close()


@pytest.mark.parametrize("memory", ["none", "gru"])
def test_training_on_dict_observations_runs_and_resumes(tiny_config, memory):
    cfg = tiny_config()
    cfg.env.id = DICT_OBS
    cfg.algo.bptt_length = 8
    cfg.policy.memory = memory
    cfg.policy.memory_hidden = 8
    cfg.policy.encoders = {
        "image": {"type": "cnn", "channels": [4], "kernels": [3], "strides": [2], "out": 8}
    }
    cfg.policy.actor_keys = ["image", "state"]
    cfg.policy.critic_keys = ["image", "state", "privileged"]
    result = Trainer(cfg).train()
    assert result.updates == 4
    # Exact resume: the checkpoint carries the per-key normalizers and the encoders.
    state = torch.load(result.run_dir / "checkpoints" / "latest.pt", weights_only=False)
    keys = state["ppo"]["model"].keys()
    assert any(k.startswith("obs_normalizer.parts.state.") for k in keys)
    assert not any(k.startswith("obs_normalizer.parts.image.") for k in keys)  # scaled only
    assert any(k.startswith("actor_encoder.encoders.image.convs") for k in keys)
    cfg.total_steps *= 2
    resumed = Trainer(cfg, resume=result.run_dir).train()
    assert resumed.updates == 8
