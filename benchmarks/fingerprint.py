"""Fingerprints of short seeded training runs: a refactor that must not change results keeps them.

Each case trains a preset for a few updates (seeded, one thread, CPU) and hashes what the run
ends with: PPO's whole state (model with normalizer statistics, optimizer, LR schedule, reward
scaler), and for the first cases the returns of a deterministic and a sampled evaluation after
training (evaluation and the policy callables share the model's observation -> action path).
The cases cover every path that can run: the NumPy act step (pendulum, cartpole), the
torch act path (cartpole with act_backend torch), the recurrent path (cartpole-masked-gru), a
batched torch env (pointmass-4096), the compiled update with and without a KL check between its
gradient and its step (halfcheetah), bf16, the EMA agent and the compiled act step.

    python benchmarks/fingerprint.py                 # print the fingerprints
    python benchmarks/fingerprint.py --save FILE     # ... and write them as JSON
    python benchmarks/fingerprint.py --check FILE    # exit 1 when one differs from FILE

Fingerprints are machine-exact: compare runs on one machine (same CPU, same torch), not across.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from typing import Any

import torch

# Cases whose trained policy is also evaluated (2 episodes deterministic, 2 sampled).
EVALUATED = ("pendulum", "cartpole", "cartpole-masked-gru")

# name -> (preset, overrides)
CASES: dict[str, tuple[str, dict]] = {
    "pendulum": ("pendulum", {"total_steps": 4096}),  # NumPy act step (8 envs)
    "cartpole": ("cartpole", {"total_steps": 1024}),  # NumPy act step, Categorical
    "cartpole-torch-act": ("cartpole", {"total_steps": 1024, "algo.act_backend": "torch"}),
    "cartpole-masked-gru": ("cartpole-masked-gru", {"total_steps": 1024}),  # recurrent
    "pointmass-4096": ("pointmass-4096", {"total_steps": 2 * 4096 * 24}),  # batched torch env
    "halfcheetah": ("halfcheetah", {"total_steps": 2 * 2048}),  # compiled update
    # the compiled update's gradients/apply pair (a KL check between them)
    "halfcheetah-adaptive-lr": (
        "halfcheetah",
        {"total_steps": 2 * 2048, "algo.lr_schedule": "adaptive", "algo.target_kl": 0.01},
    ),
    "pendulum-bf16": ("pendulum", {"total_steps": 4096, "precision": "bf16"}),
    "pendulum-ema": ("pendulum", {"total_steps": 4096, "ema.decay": 0.5}),
    "pointmass-compile-act": (
        "pointmass-4096",
        {"total_steps": 2 * 1024 * 24, "env.num_envs": 1024, "algo.compile_act": True},
    ),
}


def _hash_state(obj: object, h: Any) -> None:
    """Feed a nested state (dicts, lists, tensors, numbers) into `h` in a fixed order."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        for key in sorted(obj, key=str):
            h.update(str(key).encode())
            _hash_state(obj[key], h)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _hash_state(item, h)
    else:
        h.update(repr(obj).encode())


def fingerprint(preset: str, overrides: dict, evaluate: bool = False) -> dict:
    from ppokit.config import load_config
    from ppokit.trainer import Trainer

    with tempfile.TemporaryDirectory() as root:
        cfg = load_config(
            preset,
            overrides={
                "device": "cpu",
                "seed": 1,
                "eval.episodes": 0,
                "log.root": root,
                "log.progress": False,
                "log.checkpoint_every": 0,
                **overrides,
            },
        )
        start = time.perf_counter()
        trainer = Trainer(cfg)
        trainer.train()
        seconds = time.perf_counter() - start
        state = trainer.ppo.state_dict()
        returns = None
        if evaluate:
            returns = [trainer.evaluate(2, deterministic=d)["returns"] for d in (True, False)]
    # The schedule's stretch (set only when a resume changed the run's length; 0 and 0.0 in
    # these runs) is left out, so fingerprints compare with those taken before it existed.
    schedule = state["schedule"]
    if schedule.get("start_update") == 0 and schedule.get("start_progress") == 0.0:
        state["schedule"] = {
            k: v for k, v in schedule.items() if k not in ("start_update", "start_progress")
        }
    model, full = hashlib.sha256(), hashlib.sha256()
    _hash_state(state["model"], model)
    _hash_state(state, full)
    out = {
        "model": model.hexdigest()[:16],
        "ppo_state": full.hexdigest()[:16],
        "updates": trainer.ppo.updates,
        "seconds": round(seconds, 1),
    }
    if returns is not None:
        out["eval"] = hashlib.sha256(repr(returns).encode()).hexdigest()[:16]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", help="write the fingerprints to this JSON file")
    parser.add_argument("--check", help="compare with the fingerprints in this JSON file")
    parser.add_argument("--only", nargs="*", help="run these cases only", choices=list(CASES))
    args = parser.parse_args(argv)
    results = {}
    for name, (preset, overrides) in CASES.items():
        if args.only and name not in args.only:
            continue
        results[name] = fingerprint(preset, overrides, name in EVALUATED)
        print(f"{name:22s} {json.dumps(results[name])}", flush=True)
    if args.save:
        with open(args.save, "w") as f:
            json.dump(results, f, indent=2)
    if args.check:
        with open(args.check) as f:
            expected = json.load(f)
        keys = ("model", "ppo_state", "eval")
        differ = [
            name
            for name, got in results.items()
            if name in expected and any(got.get(k) != expected[name].get(k) for k in keys)
        ]
        print("differ: " + ", ".join(differ) if differ else "all fingerprints equal")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
