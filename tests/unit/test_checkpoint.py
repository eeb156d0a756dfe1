"""Checkpoints: atomic writes, clear load errors, exact resume, pruning."""

from __future__ import annotations

import csv
import os
import random
import shutil
import stat
from dataclasses import replace

import numpy as np
import pytest
import torch

from ppokit import checkpoint as ckpt
from ppokit.errors import CheckpointError, OutputError
from ppokit.trainer import Trainer

# --- helpers -----------------------------------------------------------------------------------


def assert_same(a, b, where="state"):
    """Deep, exact equality of nested dicts/lists/tuples of tensors, arrays and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def stop_after(updates: int):
    def callback(trainer: Trainer, metrics: dict) -> None:
        if trainer.ppo.updates >= updates:
            trainer.request_stop()

    return callback


def read_metrics(run_dir) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def dir_listing(path) -> list[str]:
    return sorted(os.listdir(path))


# --- save_atomic -------------------------------------------------------------------------------


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_failed_save_keeps_previous_file_and_leaves_no_temp_files(tmp_path, monkeypatch, exc):
    path = tmp_path / "ckpt" / "latest.pt"
    ckpt.save_atomic({"weights": torch.arange(5)}, path)
    before = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial bytes of a checkpoint")
        f.flush()
        raise exc

    monkeypatch.setattr(torch, "save", failing_save)
    # A failed write is one line naming the file and the free space; Ctrl-C stays Ctrl-C.
    expected = OutputError if isinstance(exc, RuntimeError) else type(exc)
    with pytest.raises(expected, match=None if expected is not OutputError else "MB free on"):
        ckpt.save_atomic({"weights": torch.zeros(5)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert torch.equal(torch.load(path)["weights"], torch.arange(5))
    assert dir_listing(path.parent) == ["latest.pt"]


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OutputError, match="new.pt.*no space left on device.*MB free on"):
        ckpt.save_atomic({"a": 1}, tmp_path / "new.pt")
    assert dir_listing(tmp_path) == []


def test_save_atomic_replaces_and_creates_parents(tmp_path):
    path = tmp_path / "a" / "b" / "x.pt"
    ckpt.save_atomic({"v": 1}, path)
    ckpt.save_atomic({"v": 2}, path)
    assert torch.load(path)["v"] == 2
    assert dir_listing(path.parent) == ["x.pt"]


def test_checkpoint_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        ckpt.save_atomic({"v": 1}, tmp_path / "x.pt")
    finally:
        os.umask(old)
    # As torch.save(obj, path) would create it (a temp file from mkstemp would give 0600).
    assert stat.S_IMODE((tmp_path / "x.pt").stat().st_mode) == 0o644


# --- load errors -------------------------------------------------------------------------------


def one_line_error(call) -> str:
    with pytest.raises(CheckpointError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_missing_checkpoint(tmp_path):
    message = one_line_error(lambda: ckpt.load_checkpoint(tmp_path / "nope.pt"))
    assert "does not exist" in message and "nope.pt" in message


def test_run_dir_without_checkpoints(tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    message = one_line_error(lambda: ckpt.load_checkpoint(tmp_path / "run"))
    assert "has no checkpoint" in message


def test_garbage_file_is_corrupt(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    message = one_line_error(lambda: ckpt.load_checkpoint(path))
    assert "corrupt" in message and "garbage.pt" in message


def test_empty_file_is_corrupt(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "corrupt" in one_line_error(lambda: ckpt.load_checkpoint(tmp_path / "empty.pt"))


def test_torch_file_that_is_not_a_ppokit_checkpoint(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    message = one_line_error(lambda: ckpt.load_checkpoint(tmp_path / "other.pt"))
    assert "not a ppokit checkpoint" in message


# --- resume ------------------------------------------------------------------------------------


@pytest.fixture
def trained(tiny_config, tmp_path):
    """A finished 4-update run (linear LR) and its trainer."""
    cfg = tiny_config()
    cfg.algo = replace(cfg.algo, lr_schedule="linear")
    trainer = Trainer(cfg, run_dir=tmp_path / "run")
    result = trainer.train()
    assert result.updates == 4 and not result.interrupted
    return trainer


def test_truncated_real_checkpoint_is_corrupt(trained, tmp_path):
    data = (trained.run_dir / "checkpoints" / "latest.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    assert "corrupt" in one_line_error(lambda: ckpt.load_checkpoint(path))
    with pytest.raises(CheckpointError):
        Trainer(trained.cfg, run_dir=tmp_path / "r", resume=path)


def test_resume_restores_every_piece_of_state(trained):
    saved = ckpt.load_checkpoint(trained.run_dir)
    assert saved["path"].endswith("checkpoints/latest.pt")
    resumed = Trainer(trained.cfg, resume=trained.run_dir)
    assert resumed.run_dir.resolve() == trained.run_dir.resolve()
    # RNG streams are those of the checkpoint.
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    assert random.getstate() == saved["rng"]["python"]
    state = resumed.state_dict()

    # The envs go on where they were (exact resume), so the per-env running returns of the
    # reward scaler carry over with them, as do the return statistics.
    assert state["ppo"]["reward_scaler"]["returns"].any()
    assert saved["ppo"]["reward_scaler"]["rms.count"] == 4 * 32  # every rollout reward merged
    assert resumed.env_unsaved is None
    del saved["path"]
    # Everything, the envs' state and the observation they are at included, is as saved.
    assert_same(state, saved)

    # ... and what was saved is the live state of the run that wrote it.
    p, q = trained.ppo, resumed.ppo
    assert_same(q.model.state_dict(), p.model.state_dict(), "model")
    assert_same(q.optimizer.state_dict(), p.optimizer.state_dict(), "optimizer")
    assert q.schedule.lr == p.schedule.lr == pytest.approx(3e-4 * (1 - 3 / 4))
    assert all(g["lr"] == p.schedule.lr for g in q.optimizer.param_groups)
    assert_same(q.reward_scaler.rms.state_dict(), p.reward_scaler.rms.state_dict(), "scaler")
    assert q.updates == p.updates == 4
    assert resumed.global_step == trained.global_step == 4 * 32
    assert list(resumed.episodes.returns) == list(trained.episodes.returns)
    assert resumed.episodes.total_episodes == trained.episodes.total_episodes > 0
    # The normalizer's forward copies are refreshed from the loaded statistics.
    assert resumed.model.obs_normalizer.rms.count == 4 * 32
    x = torch.randn(5, 3)
    assert torch.equal(resumed.model.normalize(x), trained.model.normalize(x))
    assert not torch.equal(resumed.model.normalize(x), x)
    resumed.env.close()


def test_resume_restores_adaptive_learning_rate(tiny_config, tmp_path):
    cfg = tiny_config()
    cfg.algo = replace(
        cfg.algo, lr_schedule="adaptive", target_kl=1e-6, lr=5e-4, min_lr=1e-5, max_lr=1e-3
    )
    trainer = Trainer(cfg, run_dir=tmp_path / "run")
    trainer.train()
    lr = trainer.ppo.schedule.lr
    assert lr < 5e-4  # the tiny KL target drove it down
    resumed = Trainer(cfg, resume=tmp_path / "run")
    assert resumed.ppo.schedule.lr == lr
    assert all(g["lr"] == lr for g in resumed.ppo.optimizer.param_groups)
    resumed.env.close()


def test_two_resumes_from_one_checkpoint_are_bit_identical(trained, tmp_path):
    source = tmp_path / "ckpt.pt"
    shutil.copy(trained.run_dir / "checkpoints" / "latest.pt", source)
    cfg = replace(trained.cfg, total_steps=trained.cfg.total_steps + 3 * 32)  # 3 more updates
    runs = []
    for name in ("r1", "r2"):
        t = Trainer(cfg, run_dir=tmp_path / name, resume=source)
        result = t.train()
        assert result.updates == 7 and result.global_step == 7 * 32
        runs.append(t)
    a, b = runs
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    assert_same(a.ppo.optimizer.state_dict(), b.ppo.optimizer.state_dict(), "optimizer")
    assert (
        read_metrics(a.run_dir)[-1]["losses/policy_loss"]
        == (read_metrics(b.run_dir)[-1]["losses/policy_loss"])
    )
    # ... and they trained: parameters moved away from the checkpoint's.
    saved = ckpt.load_checkpoint(source)["ppo"]["model"]
    assert not torch.equal(a.model.actor.layers[0].weight, saved["actor.layers.0.weight"])


def test_interrupted_run_resumes_schedule_and_normalizer(tiny_config, tmp_path):
    cfg = tiny_config(total_steps=8 * 32)  # 8 updates
    cfg.algo = replace(cfg.algo, lr_schedule="linear", lr=1e-3)
    cfg.log = replace(cfg.log, checkpoint_every=0)
    first = Trainer(cfg, run_dir=tmp_path / "run", callbacks=[stop_after(4)])
    result = first.train()
    assert result.interrupted and result.updates == 4 and result.global_step == 4 * 32
    assert ckpt.load_checkpoint(tmp_path / "run")["ppo"]["updates"] == 4

    second = Trainer(cfg, resume=tmp_path / "run")
    result = second.train()
    assert not result.interrupted and result.updates == 8 and result.global_step == 8 * 32
    rows = read_metrics(tmp_path / "run")
    assert [int(r["global_step"]) for r in rows] == [32 * k for k in range(1, 9)]
    lrs = [float(r["charts/learning_rate"]) for r in rows]
    assert lrs == pytest.approx([1e-3 * (1 - k / 8) for k in range(8)])  # no restart at 1e-3
    assert second.model.obs_normalizer.rms.count == 8 * 32  # counts continue


def test_resume_with_longer_run_extends_the_lr_schedule(trained):
    cfg = replace(trained.cfg, total_steps=8 * 32)
    resumed = Trainer(cfg, resume=trained.run_dir)
    resumed.train()
    lrs = [float(r["charts/learning_rate"]) for r in read_metrics(trained.run_dir)]
    assert len(lrs) == 8
    assert lrs[:4] == pytest.approx([3e-4 * (1 - k / 4) for k in range(4)])
    # The schedule had ended (4 of 4 updates): what was left of it from the last update on
    # (progress 3/4 -> 1) is stretched over the 4 new updates, so the LR goes on from the last
    # update's 7.5e-5 without a jump (neither back up to 3e-4 nor down to 0) and decays to 0.
    assert lrs[4:] == pytest.approx([7.5e-5 * (1 - j / 4) for j in range(4)])
    assert min(lrs) > 0


def test_extending_an_unfinished_run_keeps_the_lr_continuous(tiny_config, tmp_path):
    """Stopped after 4 of 8 updates and resumed as a 12-update run: the LR at update 4 is the
    one the 8-update schedule gave it, and the rest of the schedule (progress 1/2 -> 1) runs
    over updates 4..11."""
    cfg = tiny_config(total_steps=8 * 32)
    cfg.algo = replace(cfg.algo, lr_schedule="linear", lr=1e-3)
    Trainer(cfg, run_dir=tmp_path / "run", callbacks=[stop_after(4)]).train()
    longer = replace(cfg, total_steps=12 * 32)
    Trainer(longer, resume=tmp_path / "run").train()
    lrs = [float(r["charts/learning_rate"]) for r in read_metrics(tmp_path / "run")]
    expected = [1e-3 * (1 - k / 8) for k in range(4)]
    expected += [1e-3 * (1 - (0.5 + 0.5 * (u - 4) / 8)) for u in range(4, 12)]
    assert lrs == pytest.approx(expected)
    assert lrs[4] == pytest.approx(1e-3 * (1 - 4 / 8))  # no jump at the resume


@pytest.mark.parametrize(
    ("section", "change", "field"),
    [
        ("policy", {"actor_hidden": [32, 32]}, "policy.actor_hidden"),
        ("policy", {"activation": "relu"}, "policy.activation"),
        ("env", {"id": "CartPole-v1"}, "env.id"),
        ("policy", {"normalize_obs": False}, "policy.normalize_obs"),
    ],
)
def test_resume_with_incompatible_config_names_the_field(trained, section, change, field):
    cfg = replace(trained.cfg, **{section: replace(getattr(trained.cfg, section), **change)})
    with pytest.raises(CheckpointError) as info:
        Trainer(cfg, resume=trained.run_dir)
    message = str(info.value)
    assert field in message and "incompatible" in message and "\n" not in message


def test_resume_accepts_compatible_changes(trained):
    cfg = replace(trained.cfg, total_steps=5 * 32, seed=99)
    cfg.algo = replace(cfg.algo, num_epochs=1, ent_coef=0.01)
    resumed = Trainer(cfg, resume=trained.run_dir)
    assert resumed.ppo.updates == 4
    resumed.env.close()


def test_a_checkpoint_saved_with_the_old_key_names_resumes_and_loads(trained, tmp_path, capsys):
    """Checkpoints written before observation normalization and reward scaling moved to
    policy.* and algo.* (their saved config has them under env:) still resume and load."""
    import ppokit
    from ppokit import config as C

    path = trained.run_dir / "checkpoints" / "latest.pt"
    state = torch.load(path, weights_only=False)
    saved = state["config"]
    for old, new in C.RENAMED.items():
        section, leaf = new.split(".")
        saved["env"][old.split(".")[1]] = saved[section].pop(leaf)
    old_path = tmp_path / "old.pt"
    torch.save(state, old_path)
    resumed = Trainer(trained.cfg, resume=old_path)
    assert resumed.ppo.updates == 4
    resumed.env.close()
    obs = np.zeros(3, np.float32)
    assert np.array_equal(ppokit.load_policy(old_path)(obs), ppokit.load_policy(path)(obs))
    # Resuming still compares them: a different normalize_obs is refused, under its new name.
    cfg = replace(trained.cfg, policy=replace(trained.cfg.policy, normalize_obs=False))
    with pytest.raises(CheckpointError, match="policy.normalize_obs: checkpoint True"):
        Trainer(cfg, resume=old_path)


def test_missing_resume_path_raises(tiny_config, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(tiny_config(), resume=tmp_path / "missing")


def test_periodic_checkpoints_are_pruned(tiny_config, tmp_path):
    cfg = tiny_config(total_steps=5 * 32)
    cfg.log = replace(cfg.log, checkpoint_every=1, keep_checkpoints=2)
    trainer = Trainer(cfg, run_dir=tmp_path / "run")
    trainer.train()
    folder = tmp_path / "run" / "checkpoints"
    assert dir_listing(folder) == ["latest.pt", "update_000004.pt", "update_000005.pt"]
    assert ckpt.load_checkpoint(folder / "update_000004.pt")["ppo"]["updates"] == 4
    latest = ckpt.load_checkpoint(folder / "latest.pt")
    assert latest["ppo"]["updates"] == 5 and latest["global_step"] == 5 * 32
    # A periodic file resumes too, and a checkpoint file locates its run directory.
    resumed = Trainer(cfg, resume=folder / "update_000004.pt")
    assert resumed.ppo.updates == 4 and resumed.run_dir.resolve() == (tmp_path / "run").resolve()
    resumed.env.close()
