"""The example graphs learn: the basic loop on CartPole (CI tier) and on Pendulum (slower).

The graphs run ppokit's own PPO steps with the settings of the cartpole and pendulum presets, so
they learn as `ppokit train` does; a graph layer that broke the loop (wrong next observations
for GAE, a lost truncation bootstrap, actions sent to the wrong envs) would not reach these.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ppokit.nodes import load_graph, run_graph

pytestmark = [pytest.mark.learning, pytest.mark.slow]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "graphs"


def run_example(name: str, tmp_path: Path) -> dict:
    graph = load_graph(EXAMPLES / f"{name}.json")
    result = run_graph(graph, out_dir=tmp_path, quiet=True)
    return result.results


@pytest.mark.xdist_group("learning-graph")
def test_cartpole_graph_reaches_475_within_100k_steps(tmp_path):
    results = run_example("cartpole_ppo", tmp_path)
    assert results["trainer"]["global_step"] <= 100_000
    evaluation = results["eval"]
    assert evaluation["episodes"] == 20
    assert evaluation["mean_return"] >= 475, evaluation


@pytest.mark.xdist_group("learning-graph-pendulum")
def test_pendulum_graph_reaches_minus_250_within_100k_steps(tmp_path):
    results = run_example("pendulum_ppo", tmp_path)
    assert results["trainer"]["updates"] == 49  # the preset's budget: total_steps 100000
    evaluation = results["eval"]
    assert evaluation["episodes"] == 20
    assert evaluation["mean_return"] >= -250, evaluation
    assert Path(results["export"]).is_file()
