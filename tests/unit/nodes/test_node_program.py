"""Running graphs: the basic loop is ppokit's training loop (same parameters as `Trainer`), the
exported script gives the same result as `graph run`, the example patterns run, and errors name
the node that raised."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ppokit.config import load_config
from ppokit.envs.base import StepResult
from ppokit.nodes import GraphRunError, build_program, export_script, load_graph, run_graph
from ppokit.nodes.runtime import PolicyOutput, Window
from ppokit.trainer import Trainer
from ppokit_testutil import cli_env


def run(graph: dict, tmp_path, name: str = "g.json", **kwargs):
    return run_graph(load_graph(graph, name), out_dir=tmp_path / "out", quiet=True, **kwargs)


def checkpoint_params(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["ppo"]["model"]


def assert_same_params(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def trainer_run(preset: str, tmp_path, **overrides) -> tuple[Trainer, dict]:
    cfg = load_config(
        preset,
        overrides={
            "log.root": str(tmp_path / "runs"),
            "log.progress": False,
            "log.checkpoint_every": 0,
            "device": "cpu",
            **overrides,
        },
    )
    trainer = Trainer(cfg)
    result = trainer.train()
    return trainer, result.eval


def test_basic_loop_equals_ppokit_train(tiny_graph, tmp_path):
    """The cartpole graph and `ppokit train --preset cartpole` at the same settings train the
    same parameters and evaluate the same, bit for bit: one PPO implementation."""
    result = run(tiny_graph(), tmp_path)
    trainer, evaluation = trainer_run(
        "cartpole",
        tmp_path,
        **{
            "env.num_envs": 2,
            "algo.num_steps": 16,
            "algo.num_epochs": 2,
            "algo.num_minibatches": 2,
            "total_steps": 64,
            "eval.episodes": 2,
            "seed": 1,
        },
    )
    graph_params = checkpoint_params(result.results["checkpoint"])
    assert_same_params(graph_params, trainer.model.state_dict())
    assert result.results["eval"]["returns"] == evaluation["returns"]
    assert result.results["trainer"]["updates"] == trainer.ppo.updates == 2


def test_continuous_actions_and_truncation_equal_ppokit_train(examples_dir, tmp_path):
    """Pendulum with a 10-step time limit: truncated episodes bootstrap inside PPO.record, the
    action processor clips to the env's bounds; still the same parameters as the Trainer."""
    graph = load_graph(examples_dir / "pendulum_ppo.json")
    del graph.nodes["export"]
    graph.nodes["env"].params.update(num_envs=2, max_episode_steps=10)
    graph.nodes["trainer"].params.update(
        horizon_length=16, epochs=2, minibatch_size=16, total_steps=64, log_every=0
    )
    graph.nodes["eval"].params["episodes"] = 2
    result = run_graph(graph, out_dir=tmp_path / "out", quiet=True)
    trainer, evaluation = trainer_run(
        "pendulum",
        tmp_path,
        **{
            "env.num_envs": 2,
            "env.max_episode_steps": 10,
            "algo.num_steps": 16,
            "algo.num_epochs": 2,
            "algo.num_minibatches": 2,
            "total_steps": 64,
            "eval.episodes": 2,
            "seed": 1,
        },
    )
    assert_same_params(checkpoint_params(result.results["checkpoint"]), trainer.model.state_dict())
    assert result.results["eval"]["returns"] == evaluation["returns"]


def test_exported_script_gives_the_same_result_as_graph_run(tiny_graph, tmp_path):
    graph = load_graph(tiny_graph(), "tiny.json")
    source = export_script(graph)
    assert source == build_program(graph).source  # the very code graph run executes
    script = tmp_path / "tiny.py"
    script.write_text(source)
    proc = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "script_out"), "--quiet"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint: wrote" in proc.stdout
    result = run_graph(graph, out_dir=tmp_path / "graph_out", quiet=True)
    assert_same_params(
        checkpoint_params(tmp_path / "script_out" / "checkpoint.pt"),
        checkpoint_params(result.results["checkpoint"]),
    )


def test_multi_env_graph_equals_one_env_node_of_all_envs(examples_dir, tiny_graph, tmp_path):
    """Two env nodes of 2 envs seeded 1 and 3, concatenated, are the envs of one node of 4
    seeded 1: BatchConcat/BatchSplit keep every row where it belongs."""
    multi = load_graph(examples_dir / "cartpole_multi_env.json")
    multi.nodes["env_a"].params.update(num_envs=2, seed=1)
    multi.nodes["env_b"].params.update(num_envs=2, seed=3)
    multi.nodes["split"].params["sizes"] = [2, 2]
    multi.nodes["trainer"].params.update(
        horizon_length=16, epochs=2, minibatch_size=16, total_steps=128, log_every=0
    )
    multi.nodes["eval"].params["episodes"] = 2
    multi.nodes["checkpoint"] = load_graph(tiny_graph(), "x").nodes["checkpoint"]
    single = tiny_graph()
    single["nodes"]["env"]["params"]["num_envs"] = 4
    single["nodes"]["trainer"]["params"]["total_steps"] = 128
    a = run_graph(multi, out_dir=tmp_path / "multi", quiet=True)
    b = run(single, tmp_path)
    assert a.results["trainer"]["updates"] == 2
    assert_same_params(
        checkpoint_params(a.results["checkpoint"]), checkpoint_params(b.results["checkpoint"])
    )


def test_hierarchical_graph_runs(examples_dir, tmp_path):
    graph = load_graph(examples_dir / "cartpole_hierarchical.json")
    graph.nodes["low_trainer"].params.update(total_steps=512, log_every=0)
    graph.nodes["high_trainer"].params.update(total_steps=1024, log_every=0)
    result = run_graph(graph, out_dir=tmp_path / "out", quiet=True)
    low, high = result.results["low_trainer"], result.results["high_trainer"]
    assert (low["updates"], low["global_step"]) == (2, 512)
    # The high-level agent acts every 4 ticks: 16 transitions of 8 envs are 512 env steps.
    assert (high["updates"], high["global_step"]) == (2, 1024)
    assert result.results["ticks"] == 1024 // 8 + 1
    assert torch.isfinite(torch.tensor(high["loss_info"]["losses/value_loss"]))


def test_trigger_runs_a_node_on_every_nth_update(tiny_graph, tmp_path, capsys):
    graph = tiny_graph()
    graph["nodes"]["trainer"]["params"]["total_steps"] = 128  # 4 updates
    graph["nodes"]["eval"]["inputs"]["trigger"] = "trainer.training_complete"
    graph["nodes"]["eval"]["params"].update(every=2, at_end=False)
    result = run_graph(load_graph(graph, "g.json"), out_dir=tmp_path / "out")
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[eval]")]
    assert len(lines) == 2 and lines[0].endswith("(tick 32)") and lines[1].endswith("(tick 64)")
    assert result.results["eval"]["episodes"] == 2


def test_graph_without_trainer_runs_max_ticks(tiny_graph, tmp_path):
    graph = tiny_graph()
    del graph["nodes"]["trainer"], graph["nodes"]["checkpoint"]
    graph["max_ticks"] = 5
    result = run(graph, tmp_path)
    assert result.results["ticks"] == 5
    assert result.results["eval"]["episodes"] == 2


def test_failing_node_is_named_with_its_tick(tmp_path):
    graph = {
        "format": "ppokit-graph",
        "max_ticks": 10,
        "nodes": {
            "env": {
                "type": "EnvNode",
                "params": {
                    "env_id": "ppokit_test_envs:ppokit-test/Countdown-v0",
                    "num_envs": 2,
                    "kwargs": {"nan_at": 3},
                },
            },
            "router": {
                "type": "ORNode",
                "inputs": {"initial": "env.observations", "loop": "step.next_observations"},
            },
            "agent": {"type": "PPOAgentNode", "inputs": {"observations": "router.observations"}},
            "step": {
                "type": "EnvStepNode",
                "inputs": {"env": "env.env", "actions": "agent.policy_output"},
            },
        },
    }
    with pytest.raises(GraphRunError) as info:
        run(graph, tmp_path)
    assert str(info.value).startswith(
        "node 'step' (EnvStepNode) failed at tick 2: observation from env"
        " 'ppokit_test_envs:ppokit-test/Countdown-v0' contains NaN/inf"
    )
    assert info.value.__cause__ is info.value.error  # the original error is chained


def test_failure_after_the_last_tick_is_named(tiny_graph, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "blocker").write_text("a file where a directory is needed")
    graph = tiny_graph()
    graph["nodes"]["checkpoint"]["params"]["path"] = "blocker/checkpoint.pt"
    with pytest.raises(
        GraphRunError,
        match=r"^node 'checkpoint' \(SaveCheckpointNode\) failed after the last tick: cannot write checkpoint",
    ):
        run(graph, tmp_path)


def test_window_sums_rewards_up_to_the_first_episode_end():
    window = Window()

    def step(obs, rewards, terminated, truncated, final=None):
        return StepResult(
            torch.tensor(obs, dtype=torch.float32).unsqueeze(1),
            torch.tensor(rewards),
            torch.tensor(terminated),
            torch.tensor(truncated),
            None if final is None else torch.tensor(final, dtype=torch.float32).unsqueeze(1),
        )

    window.add(
        *(lambda s: (s, s.rewards))(
            step([1, 1, 1], [1.0, 1.0, 1.0], [False, False, False], [False, False, False])
        )
    )
    s = step(
        [0, 2, 2], [2.0, 2.0, 2.0], [True, False, False], [False, False, False], final=[9, 2, 2]
    )
    window.add(s, s.rewards)
    s = step(
        [1, 0, 3], [4.0, 4.0, 4.0], [False, False, False], [False, True, False], final=[1, 8, 3]
    )
    window.add(s, s.rewards)
    out = window.pop()
    assert out.rewards.tolist() == [3.0, 7.0, 7.0]
    assert out.terminated.tolist() == [True, False, False]
    assert out.truncated.tolist() == [False, True, False]
    assert out.final_obs.squeeze(1).tolist() == [9.0, 8.0, 3.0]
    assert out.obs.squeeze(1).tolist() == [1.0, 0.0, 3.0]


def test_policy_output_matches_the_model(tiny_graph, tmp_path):
    import gymnasium as gym
    import numpy as np

    from ppokit.config import PolicyConfig
    from ppokit.nn.actor_critic import ActorCritic

    model = ActorCritic(
        gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        gym.spaces.Box(-2.0, 2.0, (2,), np.float32),
        PolicyConfig(actor_hidden=[8], critic_hidden=[8]),
    )
    obs = torch.randn(4, 3)
    out = PolicyOutput.explore(model, obs)
    with torch.no_grad():
        norm = model.normalize(obs)
        assert torch.equal(out.value, model.value(norm))
        params = out.action_params
        assert torch.equal(params["mean"], model.actor(norm))
        log_prob = model.distribution.log_prob(params["mean"], out.policy_action)
    assert torch.allclose(out.log_prob, log_prob)
    assert torch.equal(out.action, model.to_env(out.policy_action))
    assert out.action.abs().max() <= 2.0


def test_action_processor_rescales_scales_offsets_and_clips(examples_dir, tmp_path):
    graph = load_graph(examples_dir / "pendulum_ppo.json")
    for node_id in ("trainer", "checkpoint", "export", "eval"):
        del graph.nodes[node_id]
    graph.settings["max_ticks"] = 3
    graph.nodes["agent"].params["rescale_actions"] = False
    graph.nodes["actions"].params.update(rescale=True, scale=2.0, offset=0.5, low=-1.0, high=1.0)
    source = build_program(graph).source
    assert (
        "actions = torch.clamp(torch.addcmul(actions_center, agent_policy_output.action,"
        " actions_half) * 2.0 + 0.5, -1.0, 1.0)"
    ) in source
    assert run_graph(graph, out_dir=tmp_path, quiet=True).results["ticks"] == 3
    graph.nodes["actions"].params["scale"] = 1.0
    graph.nodes["actions"].params.update(rescale=False, offset=0.0, clip=False)
    assert "actions = " not in build_program(graph).source  # identity: the agent's actions


def test_graph_checkpoint_resumes_with_ppokit_train(tiny_graph, tmp_path):
    from ppokit.checkpoint import load_checkpoint
    from ppokit.config import apply_overrides, from_dict

    result = run(tiny_graph(), tmp_path)
    state = load_checkpoint(result.results["checkpoint"])
    cfg = from_dict(state["config"], where="checkpoint config")
    cfg = apply_overrides(cfg, {"total_steps": 96, "log.progress": False}, "test")
    trainer = Trainer(cfg, run_dir=tmp_path / "resumed", resume=result.results["checkpoint"])
    assert (trainer.ppo.updates, trainer.global_step) == (2, 64)
    trainer.train()
    assert trainer.ppo.updates == 3
