"""What a run says when it starts: the rounding of total_steps to whole updates, and the one-off
compilation of the update with algo.compile (torch.compile replaced by the identity here: the
compiled step itself is tested in test_compiled_step.py)."""

from __future__ import annotations

import torch

import ppokit
import ppokit.algo.accel as accel
from ppokit_testutil import tiny_train_config


def test_total_steps_rounded_up_to_whole_updates_is_said_once(tmp_path, capsys):
    result = ppokit.train(tiny_train_config(tmp_path, total_steps=100))  # 32 steps per update
    out = capsys.readouterr().out
    assert result.global_step == 128 and result.updates == 4
    assert out.count("total_steps 100 is not a multiple of the 32 steps per update") == 1
    assert "(2 envs x 16 steps): training runs 4 updates = 128 steps" in out
    ppokit.train(tiny_train_config(tmp_path / "exact", total_steps=128))
    assert "not a multiple" not in capsys.readouterr().out


def test_compiling_the_update_is_announced_once(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(accel, "compile_available", lambda device: (True, ""))
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    cfg = tiny_train_config(tmp_path)
    cfg.algo.compile = True
    trainer = ppokit.Trainer(cfg)
    assert trainer.ppo.paths.update == "compiled"
    trainer.train()
    out = capsys.readouterr().out
    assert out.count("algo.compile: compiling the update with torch.compile (one-off") == 1
    assert out.count("algo.compile: the first update took") == 1
