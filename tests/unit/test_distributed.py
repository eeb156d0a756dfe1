"""Data-parallel training (ppokit.distributed) on 2 CPU processes over gloo.

One spawn of 2 ranks runs every scenario (start-up is most of the cost) and saves what each rank
ends with; the tests compare the ranks with each other and with a single process holding both
ranks' envs. The launch through torchrun and the CLI is tested in tests/cli/test_cli_distributed.py.
"""

from __future__ import annotations

import copy
import socket
import warnings
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.algo.ppo import PPO
from ppokit.config import TrainConfig, validate
from ppokit.distributed import LocalSync, merge_moments
from ppokit.nn.actor_critic import ActorCritic
from ppokit_testutil import tiny_train_config

WORLD = 2
# The first-update comparison: T steps x N envs per rank, K minibatches, D-dim observations.
T, N, K, D, A = 8, 3, 2, 4, 2


# --------------------------------------------------------------------------------------------
# Without processes
# --------------------------------------------------------------------------------------------


def test_merge_moments_equals_the_moments_of_the_union():
    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(n, 3, generator=g, dtype=torch.float64) * 3 + 1 for n in (5, 17, 2)]
    moments = [
        (x.mean(0), x.var(0, unbiased=False), torch.tensor(len(x), dtype=torch.float64))
        for x in parts
    ]
    mean, var, count = merge_moments(moments)
    union = torch.cat(parts)
    torch.testing.assert_close(mean, union.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, union.var(0, unbiased=False), rtol=1e-12, atol=1e-12)
    assert float(count) == len(union)


def test_a_single_process_shares_nothing():
    sync = LocalSync()
    x = torch.randn(4, 3)
    assert not sync.distributed and sync.is_main and sync.world_size == 1
    assert sync.average_flat(x)[0] is x
    assert sync.gather_envs(x)[0] is x
    assert sync.any(True) and not sync.any(False)
    assert sync.broadcast_object("a") == "a" and sync.gather_object("a") == ["a"]
    ppo = _first_update_ppo(num_envs=N)
    assert isinstance(ppo.sync, LocalSync)


def test_teardown_frees_the_process_group_and_warns_when_something_still_holds_it(tmp_path):
    """A group that outlives destroy_process_group keeps gloo threads that can abort the exit
    (torchrun ranks died with exit -6 after finished runs): teardown must free it, or say so."""
    import torch.distributed as dist
    import torch.distributed.nn.functional  # noqa: F401  (imported before the group, as setup does)

    from ppokit.distributed import teardown

    def one_rank_group(name: str) -> None:
        store = f"file://{tmp_path / name}"
        dist.init_process_group("gloo", init_method=store, rank=0, world_size=1)

    one_rank_group("held")
    held = dist.group.WORLD
    with pytest.warns(RuntimeWarning, match="outlived destroy_process_group"):
        teardown()
    del held
    one_rank_group("free")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        teardown()
    assert not dist.is_initialized()
    teardown()  # idempotent


# --------------------------------------------------------------------------------------------
# The scenarios each rank runs
# --------------------------------------------------------------------------------------------


def _first_update_cfg(num_envs: int) -> TrainConfig:
    cfg = TrainConfig()
    cfg.env = replace(cfg.env, num_envs=num_envs)
    cfg.algo = replace(
        cfg.algo,
        num_steps=T,
        num_epochs=3,
        num_minibatches=K,
        lr_schedule="adaptive",
        target_kl=0.01,
        lr=1e-3,
    )
    cfg.policy = replace(cfg.policy, actor_hidden=[16], critic_hidden=[16])
    validate(cfg)
    return cfg


def _first_update_ppo(num_envs: int, sync=None) -> PPO:
    torch.manual_seed(0)
    cfg = _first_update_cfg(num_envs)
    model = ActorCritic(
        gym.spaces.Box(-np.inf, np.inf, (D,), np.float32),
        gym.spaces.Box(-1, 1, (A,), np.float32),
        cfg.policy,
    )
    return PPO(model, cfg, torch.device("cpu"), total_updates=10, sync=sync)


def _first_update_data() -> dict[str, torch.Tensor]:
    """One rollout of WORLD * N envs; rank r's envs are columns r*N ... (r+1)*N - 1."""
    g = torch.Generator().manual_seed(123)
    E = WORLD * N
    ended = torch.rand(T, E, generator=g) < 0.2
    terminated = ended & (torch.rand(T, E, generator=g) < 0.5)
    return {
        "obs": torch.randn(T, E, D, generator=g) * 2 + 1,
        "actions": torch.randn(T, E, A, generator=g) * 0.5,
        "rewards": torch.randn(T, E, generator=g) + 0.5,
        "terminated": terminated,
        "truncated": ended & ~terminated,
        "bootstrap_values": torch.randn(T, E, generator=g),
        "next_obs": torch.randn(E, D, generator=g) * 2 + 1,
    }


def _first_update_perm(rank: int | None) -> torch.Tensor:
    """The sample order of an epoch: each rank in order; the single process (rank None) so that
    its minibatch k is rank 0's minibatch k followed by rank 1's."""
    M = T * N // K
    if rank is not None:
        return torch.arange(T * N)

    def global_index(r: int, j: torch.Tensor) -> torch.Tensor:
        return (j // N) * WORLD * N + r * N + j % N

    return torch.cat(
        [global_index(r, torch.arange(k * M, (k + 1) * M)) for k in range(K) for r in range(WORLD)]
    )


def run_first_update(ppo: PPO, rank: int | None) -> dict:
    """Fill the buffer with this rank's share of the data, finish the rollout and update once;
    returns the first minibatch's (averaged) gradient, the final state and the metrics."""
    data = _first_update_data()
    cols = slice(None) if rank is None else slice(rank * N, (rank + 1) * N)
    b = ppo.buffer
    with torch.no_grad():
        b.obs.copy_(data["obs"][:, cols])
        b.actions.copy_(data["actions"][:, cols])
        obs = ppo.model.normalize(b.flat_obs())
        log_probs, _, _ = ppo.model.evaluate(obs, b.actions.flatten(0, 1))
        b.log_probs.copy_(log_probs.view(T, -1))
    for name in ("rewards", "terminated", "truncated", "bootstrap_values"):
        getattr(b, name).copy_(data[name][:, cols])
    b.step = T
    ppo.finish_rollout(data["next_obs"][cols])
    grads: list[list[torch.Tensor]] = []
    real_step = ppo.optimizer.step

    def step(*args, **kwargs):
        grads.append([p.grad.clone() for p in ppo.params])
        return real_step(*args, **kwargs)

    ppo.optimizer.step = step
    perm = _first_update_perm(rank)
    real_randperm = torch.randperm
    torch.randperm = lambda n, **kwargs: perm.clone()
    try:
        metrics = ppo.update()
    finally:
        torch.randperm = real_randperm
        ppo.optimizer.step = real_step
    return {
        "grad": grads[0],
        "params": [p.detach().clone() for p in ppo.params],
        "obs_rms": copy.deepcopy(ppo.model.obs_normalizer.rms.state_dict()),
        "reward_rms": copy.deepcopy(ppo.reward_scaler.rms.state_dict()),
        "metrics": metrics,
    }


def _trainer_cfg(root: Path, name: str, **algo) -> TrainConfig:
    cfg = tiny_train_config(root)
    cfg.algo = replace(cfg.algo, **algo)
    cfg.log = replace(cfg.log, run_name=name)
    cfg.total_steps = 4 * cfg.algo.num_steps * cfg.env.num_envs * WORLD  # 4 updates
    validate(cfg)
    return cfg


TRAINER_VARIANTS = {
    # KL early stop and the adaptive LR decide on the averaged KL (a low target makes both act).
    "eager-kl": {"lr_schedule": "adaptive", "target_kl": 1e-5, "kl_early_stop": True},
    # algo.compile's gradients()/apply() pair with the all-reduce in between (torch.compile is
    # replaced by the identity in the workers: compiling is tested in test_compiled_step.py).
    "compiled": {"compile": True, "lr_schedule": "adaptive", "target_kl": 0.01},
}


def _final_state(trainer) -> dict:
    return {
        "model": copy.deepcopy(trainer.model.state_dict()),
        "optimizer": copy.deepcopy(trainer.ppo.optimizer.state_dict()),
        "reward_scaler": copy.deepcopy(trainer.ppo.reward_scaler.rms.state_dict()),
        "lr": trainer.ppo.schedule.lr,
        "updates": trainer.ppo.updates,
        "global_step": trainer.global_step,
        "episodes": trainer.episodes.state_dict(),
    }


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    import torch.distributed.nn.functional  # noqa: F401  (before the group: see setup())

    from ppokit.distributed import DistributedSync
    from ppokit.errors import ConfigError
    from ppokit.trainer import Trainer

    out_dir = Path(out)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        results: dict = {}
        # Ranks started with different configs refuse to train, every rank with the same error.
        try:
            Trainer(_trainer_cfg(out_dir / "runs", "mismatch", lr=1e-4 * (1 + rank)))
        except ConfigError as e:
            results["mismatch"] = str(e)

        ppo = _first_update_ppo(N, sync=DistributedSync(torch.device("cpu")))
        results["first_update"] = run_first_update(ppo, rank)

        import ppokit.algo.accel as accel

        accel.compile_available = lambda device: (True, "")
        torch.compile = lambda fn, **kwargs: fn
        for name, algo in TRAINER_VARIANTS.items():
            stops: list[float] = []
            trainer = Trainer(
                _trainer_cfg(out_dir / "runs", name, **algo),
                callbacks=[lambda _, m, stops=stops: stops.append(m["losses/early_stopped"])],
            )
            assert (trainer.ppo.paths.update == "compiled") == algo.get("compile", False)
            trainer.train()
            results[name] = {**_final_state(trainer), "early_stopped": stops}

        recurrent = _trainer_cfg(out_dir / "runs", "gru", bptt_length=8, num_minibatches=2)
        recurrent.env = replace(recurrent.env, id="ppokit/PendulumNoVel-v1")
        recurrent.policy = replace(recurrent.policy, memory="gru", memory_hidden=8)
        trainer = Trainer(recurrent)
        trainer.train()
        results["gru"] = _final_state(trainer)

        # Resume the eager run from its update-2 checkpoint, twice.
        checkpoint = out_dir / "runs" / "eager-kl" / "checkpoints" / "update_000002.pt"
        saved = torch.load(checkpoint, weights_only=False)
        for attempt in ("resume-a", "resume-b"):
            cfg = _trainer_cfg(out_dir / "runs", "eager-kl", **TRAINER_VARIANTS["eager-kl"])
            trainer = Trainer(cfg, run_dir=out_dir / "runs" / attempt, resume=checkpoint)
            results[f"{attempt}-rng-restored"] = torch.equal(
                torch.get_rng_state(), saved["rng_ranks"][rank]["torch"]
            )
            trainer.train()
            results[attempt] = _final_state(trainer)
        torch.save(results, out_dir / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ranks(tmp_path_factory) -> tuple[list[dict], Path]:
    """What each of 2 gloo ranks ended with, per scenario; and the output directory.

    Session-scoped: xdist may interleave this module's tests with others of its group, which
    would tear a module-scoped fixture down and spawn the ranks again."""
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("distributed")
    mp.start_processes(
        _worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="spawn", join=True
    )
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], out


pytestmark = pytest.mark.xdist_group("distributed")


def assert_identical(a, b, where: str = "") -> None:
    """Bit-identical nested containers of tensors and numbers."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    else:
        assert a == b or (a != a and b != b), (where, a, b)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("scenario", [*TRAINER_VARIANTS, "gru"])
def test_ranks_hold_bit_identical_state_after_several_updates(ranks, scenario):
    (rank0, rank1), _ = ranks
    a, b = rank0[scenario], rank1[scenario]
    assert a["updates"] == 4 and a["global_step"] == 4 * 2 * 16 * WORLD
    assert_identical(a, b, scenario)  # parameters, normalizer, optimizer, reward scaler, LR
    assert a["model"]["obs_normalizer.rms.count"] == 4 * 2 * 16 * WORLD  # every rank's samples
    if scenario == "eager-kl":  # the KL early stop fired (on both ranks alike, as checked above)
        assert any(a["early_stopped"]), a["early_stopped"]


@pytest.mark.slow
def test_two_ranks_compute_the_first_update_of_one_process_holding_both_ranks_envs(ranks):
    (rank0, rank1), _ = ranks
    assert_identical(rank0["first_update"], rank1["first_update"])
    single = run_first_update(_first_update_ppo(WORLD * N), rank=None)
    two = rank0["first_update"]
    for g1, g2 in zip(single["grad"], two["grad"]):  # the averaged gradient of minibatch 1
        torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-6)
    for p1, p2 in zip(single["params"], two["params"]):  # after 3 epochs x 2 minibatches
        torch.testing.assert_close(p2, p1, rtol=1e-4, atol=1e-5)
    for key in ("obs_rms", "reward_rms"):
        for name, value in single[key].items():
            torch.testing.assert_close(two[key][name], value, rtol=1e-10, atol=1e-10)
    for name, value in single["metrics"].items():
        assert two["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.slow
def test_resume_of_a_two_rank_run_restores_every_ranks_rng_and_is_exact(ranks):
    (rank0, rank1), out = ranks
    state = torch.load(out / "runs" / "eager-kl" / "checkpoints" / "latest.pt", weights_only=False)
    assert len(state["rng_ranks"]) == WORLD
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])
    for results in (rank0, rank1):
        assert results["resume-a-rng-restored"] and results["resume-b-rng-restored"]
        assert results["resume-a"]["updates"] == 4
    assert_identical(rank0["resume-a"], rank0["resume-b"])  # two resumes, bit for bit
    assert_identical(rank0["resume-a"], rank1["resume-a"])
    # Rank 0 alone wrote the run: one metrics row per update, checkpoints, config.
    rows = (out / "runs" / "eager-kl" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 4
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "compiled",
        "eager-kl",
        "gru",
        "resume-a",
        "resume-b",
    ]


@pytest.mark.slow
def test_ranks_started_with_different_configs_refuse_to_train(ranks):
    (rank0, rank1), _ = ranks
    assert rank0["mismatch"] == rank1["mismatch"]
    assert "ranks [1]" in rank0["mismatch"] and "algo.lr" in rank0["mismatch"]
