"""A run interrupted at an update boundary (or in the middle of a rollout) and resumed equals
the uninterrupted run bit for bit on the CPU: parameters, optimizer, normalizers, reward
scaler and every metrics.csv row (wall-clock columns aside).

Each case trains an uninterrupted reference run, then the same config interrupted and resumed,
all in this process (one set of threads and kernels, so equality is exact). Episodes are short
(max_episode_steps) so that episodes end, autoreset and carry across the interruption.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace

import pytest
import torch

from ppokit import checkpoint as ckpt
from ppokit.config import TrainConfig
from ppokit.trainer import Trainer

# What depends on the wall clock, not on the run.
TIMING = ("charts/SPS", "time/rollout_s", "time/update_s")
UPDATES = 6

CASES = {
    # a classic-control env in ppokit's serial vector env, the NumPy act step
    "CartPole-v1": dict(num_envs=3, max_episode_steps=25),
    # MuJoCo physics through mj_getState/mj_setState, the torch act step
    "HalfCheetah-v5": dict(num_envs=2, max_episode_steps=20),
    # a batched torch task, its state tensors and torch.Generator
    "ppokit/TorchPointMass-v0": dict(num_envs=8, max_episode_steps=12),
}


def config(tmp_path, env_id: str) -> TrainConfig:
    cfg = TrainConfig()
    cfg.env = replace(cfg.env, id=env_id, **CASES[env_id])
    cfg.algo = replace(cfg.algo, num_steps=16, num_epochs=2, num_minibatches=2)
    cfg.policy = replace(cfg.policy, actor_hidden=[16], critic_hidden=[16])
    cfg.log = replace(
        cfg.log, root=str(tmp_path), progress=False, checkpoint_every=1, keep_checkpoints=UPDATES
    )
    cfg.eval = replace(cfg.eval, episodes=0)
    cfg.total_steps = UPDATES * 16 * cfg.env.num_envs
    cfg.seed = 3
    cfg.device = "cpu"
    return cfg


def rows(run_dir) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def assert_same_learner(a: Trainer, b: Trainer) -> None:
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), f"model {name}"  # weights, log-std, observation normalizer
    sa, sb = a.ppo.optimizer.state_dict()["state"], b.ppo.optimizer.state_dict()["state"]
    for k in sa:
        for field in sa[k]:
            assert torch.equal(sa[k][field], sb[k][field]), f"optimizer {k}.{field}"
    for (name, x), (_, y) in zip(
        a.ppo.reward_scaler.state_dict().items(), b.ppo.reward_scaler.state_dict().items()
    ):
        assert torch.equal(x, y), f"reward scaler {name}"
    assert a.ppo.schedule.lr == b.ppo.schedule.lr
    assert a.global_step == b.global_step and a.ppo.updates == b.ppo.updates == UPDATES
    assert list(a.episodes.returns) == list(b.episodes.returns)


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """env id -> the uninterrupted Trainer after training."""
    runs = {}
    for env_id in CASES:
        root = tmp_path_factory.mktemp("reference")
        trainer = Trainer(config(root, env_id), run_dir=root / "full")
        trainer.train()
        assert trainer.episodes.total_episodes > 0  # episodes ended, envs autoreset
        runs[env_id] = trainer
    return runs


@pytest.mark.parametrize("env_id", list(CASES))
def test_resume_from_a_periodic_checkpoint_equals_the_uninterrupted_run(
    reference_runs, tmp_path, env_id
):
    """A kill -9 after update 6 of a run whose last checkpoint is update 3: the copy of the run
    directory holds metrics rows 4-6 that no checkpoint covers; the resume drops them, and
    retrains updates 4-6 exactly as the uninterrupted run did."""
    full = reference_runs[env_id]
    killed = tmp_path / "killed"
    shutil.copytree(full.run_dir, killed)
    boundary = 3
    resumed = Trainer(
        full.cfg, resume=killed / "checkpoints" / f"update_{boundary:06d}.pt", run_dir=killed
    )
    assert resumed.env_unsaved is None  # the env's state was in the checkpoint
    resumed.train()
    assert_same_learner(resumed, full)
    assert rows(killed) == rows(full.run_dir)
    assert [int(r["global_step"]) for r in rows(killed)] == [
        full.steps_per_update * k for k in range(1, UPDATES + 1)
    ]


@pytest.mark.parametrize("env_id", list(CASES))
def test_a_stop_in_the_middle_of_a_rollout_resumes_exactly(reference_runs, tmp_path, env_id):
    """Ctrl-C while update 4's rollout is half collected: the partial rollout is discarded, the
    checkpoint holds the envs as they were when that rollout started, and the resume equals
    the uninterrupted run."""
    full = reference_runs[env_id]
    cfg = full.cfg
    first = Trainer(cfg, run_dir=tmp_path / "run")
    env_step = first.env.step
    steps = {"n": 0}

    def step_then_stop(actions):
        steps["n"] += 1
        if steps["n"] == 3 * cfg.algo.num_steps + 5:  # 5 steps into update 4's rollout
            first.request_stop()
        return env_step(actions)

    first.env.step = step_then_stop
    result = first.train()
    assert result.interrupted and result.updates == 3
    assert ckpt.load_checkpoint(tmp_path / "run")["global_step"] == 3 * first.steps_per_update
    second = Trainer(cfg, resume=tmp_path / "run")
    assert second.env_unsaved is None
    second.train()
    assert_same_learner(second, full)
    assert rows(tmp_path / "run") == rows(full.run_dir)


def test_without_the_env_state_the_resume_differs_and_says_so(reference_runs, tmp_path, capsys):
    """The negative control: the same resume with the env state taken out of the checkpoint
    restarts episodes (one line says so) and no longer equals the uninterrupted run."""
    full = reference_runs["CartPole-v1"]
    killed = tmp_path / "killed"
    shutil.copytree(full.run_dir, killed)
    path = killed / "checkpoints" / "update_000003.pt"
    state = torch.load(path, weights_only=False)
    state["rollout"]["env"] = None
    state["rollout"]["env_unsaved"] = "taken out by the test"
    ckpt.save_atomic(state, path)
    resumed = Trainer(full.cfg, resume=path, run_dir=killed)
    resumed.train()
    assert "resume: episodes restart (taken out by the test)" in capsys.readouterr().out
    differs = any(
        not torch.equal(x, y)
        for x, y in zip(resumed.model.state_dict().values(), full.model.state_dict().values())
    )
    assert differs


def test_async_envs_resume_with_a_one_line_notice(tmp_path, capsys):
    cfg = config(tmp_path, "CartPole-v1")
    cfg.env = replace(cfg.env, vectorization="async", num_envs=2)
    cfg.total_steps = 2 * 16 * 2
    Trainer(cfg, run_dir=tmp_path / "run").train()
    longer = replace(cfg, total_steps=3 * 16 * 2)
    resumed = Trainer(longer, resume=tmp_path / "run")
    assert "subprocess" in resumed.env_unsaved
    result = resumed.train()
    assert result.updates == 3
    out = capsys.readouterr().out
    assert "resume: episodes restart (" in out
