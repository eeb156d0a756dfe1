"""The example graphs learn: the basic loop on CartPole and on Pendulum, each on the median of
three seeds (`ppokit graph run --seed S`).

The graphs run ppokit's own PPO steps with the settings of the cartpole and pendulum presets, so
they learn as `ppokit train` does; a graph layer that broke the loop (wrong next observations
for GAE, a lost truncation bootstrap, actions sent to the wrong envs) would not reach these.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ppokit.nodes import load_graph, run_graph
from ppokit_learning import EVAL_EPISODES, assert_median_at_least, over_seeds

pytestmark = [pytest.mark.learning, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "graphs"


def run_example(name: str, seed: int, out: Path) -> dict:
    graph = load_graph(EXAMPLES / f"{name}.json")
    graph.settings["seed"] = seed
    return run_graph(graph, out_dir=out, quiet=True).results


@pytest.mark.xdist_group("learning-graph")
def test_cartpole_graph_reaches_475_within_100k_steps(tmp_path):
    def run(seed: int) -> dict:
        results = run_example("cartpole_ppo", seed, tmp_path / f"s{seed}")
        assert results["trainer"]["global_step"] <= 100_000
        assert results["eval"]["episodes"] == EVAL_EPISODES
        return results["eval"]

    assert_median_at_least(over_seeds(run), 475)


@pytest.mark.xdist_group("learning-graph-pendulum")
def test_pendulum_graph_reaches_minus_250_within_100k_steps(tmp_path):
    def run(seed: int) -> dict:
        results = run_example("pendulum_ppo", seed, tmp_path / f"s{seed}")
        assert results["trainer"]["updates"] == 49  # the preset's budget: total_steps 100000
        assert results["eval"]["episodes"] == EVAL_EPISODES
        assert Path(results["export"]).is_file()
        return results["eval"]

    assert_median_at_least(over_seeds(run), -250)
