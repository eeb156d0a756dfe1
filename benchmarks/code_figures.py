"""Figures about the code a reader must follow: `PPO`'s size and branches, the files one training
iteration runs code in, and the largest modules.

    python benchmarks/code_figures.py

- `PPO` lines: the class statement to its last line (docstrings and comments included).
- branches: by the AST of the class, each `if`/`elif`, `for`, `while`, conditional expression
  (`a if c else b`), comprehension `for`/`if`, `except` handler and each `and`/`or` operator
  (a `BoolOp` of n operands counts n - 1).
- files run: the src/ppokit files with a line executed (sys.settrace) while one iteration of
  `act` x num_steps -> `record` -> `finish_rollout` -> `update` runs on the pendulum preset
  (8 envs; the env's own steps are excluded by stepping outside the trace), on the reference
  path (algo.act_backend torch) and on the default path (auto: the NumPy act step). Set-up
  (building the env, model and PPO) is not traced.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "ppokit"


def branch_count(node: ast.AST) -> int:
    count = 0
    for n in ast.walk(node):
        if isinstance(n, (ast.If, ast.For, ast.While, ast.IfExp, ast.ExceptHandler)):
            count += 1
        elif isinstance(n, ast.BoolOp):
            count += len(n.values) - 1
        elif isinstance(n, ast.comprehension):
            count += 1 + len(n.ifs)
    return count


def ppo_figures() -> tuple[int, int]:
    tree = ast.parse((SRC / "algo" / "ppo.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PPO")
    return cls.end_lineno - cls.lineno + 1, branch_count(cls)


def files_run(act_backend: str) -> list[str]:
    import torch

    from ppokit.algo.ppo import PPO
    from ppokit.config import load_config
    from ppokit.envs import make_env
    from ppokit.nn.actor_critic import ActorCritic

    cfg = load_config("pendulum", overrides={"device": "cpu", "algo.act_backend": act_backend})
    torch.manual_seed(0)
    env = make_env(cfg.env, torch.device("cpu"))
    model = ActorCritic(
        env.observation_space,
        env.action_space,
        cfg.policy,
    )
    ppo = PPO(model, cfg, torch.device("cpu"), total_updates=10)
    obs = env.reset(seed=0)
    seen: set[str] = set()
    root = str(SRC)

    def tracer(frame, event, arg):  # noqa: ANN001, ANN202
        name = frame.f_code.co_filename
        if name.startswith(root):
            seen.add(str(Path(name).relative_to(SRC)))
        return None

    def traced(fn, *args):  # noqa: ANN001, ANN202
        sys.settrace(tracer)
        try:
            return fn(*args)
        finally:
            sys.settrace(None)

    while not ppo.rollout_full:
        actions = traced(ppo.act, obs)
        step = env.step(actions)
        traced(ppo.record, step)
        obs = step.obs
    traced(ppo.finish_rollout, obs)
    traced(ppo.update)
    env.close()
    return sorted(seen)


def largest_modules(n: int = 8) -> list[tuple[int, str]]:
    sizes = [(len(p.read_text().splitlines()), str(p.relative_to(SRC))) for p in SRC.rglob("*.py")]
    return sorted(sizes, reverse=True)[:n]


def main() -> None:
    lines, branches = ppo_figures()
    print(
        f"PPO: {lines} lines, {branches} branches (algo/ppo.py: "
        f"{len((SRC / 'algo' / 'ppo.py').read_text().splitlines())} lines)"
    )
    for backend in ("torch", "auto"):
        files = files_run(backend)
        print(f"files run in one iteration (pendulum, act_backend {backend}): {len(files)}")
        print("  " + ", ".join(files))
    print("largest modules:")
    for size, name in largest_modules():
        print(f"  {size:5d}  {name}")


if __name__ == "__main__":
    main()
