"""Defaults for any env: `--env ID` without a preset picks the recipe of the env's family, the
run is named after the env, `--print-config` and `--help` show the values that will be used, and
the initial action noise is one convention (a fraction of the action range) in every preset."""

from __future__ import annotations

import pytest
import yaml

from ppokit import config as C
from ppokit.cli import resolve_config
from ppokit.recipes import BATCHED, BOX, DISCRETE, MUJOCO, MULTI_MODAL, pick_recipe, recipe_config
from ppokit.trainer import default_run_dir
from ppokit_runs import assert_main_error, run_main


@pytest.mark.parametrize(
    ("env_id", "recipe"),
    [
        ("Hopper-v5", MUJOCO),
        ("HalfCheetah-v5", MUJOCO),
        ("InvertedPendulum-v5", MUJOCO),
        ("CartPole-v1", DISCRETE),
        ("Acrobot-v1", DISCRETE),
        ("MountainCarContinuous-v0", BOX),
        ("Pendulum-v1", BOX),
        ("ppokit/AntLocomotion-v0", MULTI_MODAL),
        ("ppokit/TorchPointMass-v0", BATCHED),
    ],
)
def test_the_env_family_and_spaces_pick_the_recipe(env_id, recipe):
    assert pick_recipe(env_id) == recipe


def test_a_recipe_takes_its_presets_settings_without_the_presets_env():
    cfg = recipe_config(MUJOCO, "Hopper-v5")
    preset = C.load_preset("halfcheetah")
    assert cfg.env.id == "Hopper-v5"
    assert (cfg.algo, cfg.policy, cfg.total_steps) == (
        preset.algo,
        preset.policy,
        preset.total_steps,
    )
    # The multi-modal recipe drops the Ant's per-key encoders and observation groups.
    multi = recipe_config(MULTI_MODAL, "my/DictEnv-v0")
    source = C.load_preset("ant-locomotion")
    assert source.policy.encoders and multi.policy.encoders == {}
    assert multi.policy.actor_keys is None and multi.policy.critic_keys is None
    assert multi.policy.actor_hidden == source.policy.actor_hidden
    # Ant's observation kwargs describe Ant-v5 only.
    assert C.load_preset("ant").env.kwargs and recipe_config(MUJOCO, "Ant-v5").env.kwargs == {}


def test_env_alone_resolves_to_the_recipe_and_flags_still_win():
    cfg, note = resolve_config(None, None, {"env.id": "Hopper-v5", "algo.lr": 1e-4})
    assert cfg.env.id == "Hopper-v5" and cfg.preset == "halfcheetah"
    assert cfg.algo.num_steps == 32 and cfg.env.num_envs == 64  # the MuJoCo recipe
    assert cfg.algo.lr == 1e-4
    assert note.startswith("recipe: mujoco") and "--preset NAME" in note
    # A preset or a config file is used as given, with no note.
    cfg, note = resolve_config("cartpole", None, {"env.id": "Acrobot-v1"})
    assert note is None and cfg.algo.gamma == 0.98 and cfg.env.id == "Acrobot-v1"
    cfg, note = resolve_config(None, None, {})
    assert note is None and cfg.preset == "pendulum"


def test_runs_are_named_after_the_env_unless_the_preset_trains_its_own():
    recipe, _ = resolve_config(None, None, {"env.id": "Hopper-v5"})
    assert default_run_dir(recipe).name.startswith("Hopper-v5_s1_")
    own = C.load_config("cartpole")
    assert default_run_dir(own).name.startswith("cartpole_s1_")
    other = C.load_config("cartpole", overrides={"env.id": "Acrobot-v1"})
    assert default_run_dir(other).name.startswith("Acrobot-v1_s1_")
    batched, _ = resolve_config(None, None, {"env.id": "ppokit/TorchPendulum-v0"})
    assert default_run_dir(batched).name.startswith("ppokit_TorchPendulum-v0_s1_")


def test_print_config_prints_the_resolved_yaml_and_trains_nothing(capsys, tmp_path):
    code, out, _ = run_main(
        capsys, "train", "--env", "Hopper-v5", "--algo.lr", "1e-4", "--log.root", tmp_path,
        "--print-config",
    )  # fmt: skip
    assert code == 0
    first, *_ = out.splitlines()
    assert first.startswith("# recipe: mujoco")
    printed = C.from_dict(yaml.safe_load(out))
    expected, _ = resolve_config(
        None, None, {"env.id": "Hopper-v5", "algo.lr": 1e-4, "log.root": str(tmp_path)}
    )
    assert printed == expected
    assert list(tmp_path.iterdir()) == []  # no run directory


def test_help_lists_the_values_of_the_chosen_preset(capsys):
    def help_text(*args: str) -> str:
        code, out, _ = run_main(capsys, "train", *args, "--help")
        assert code == 0
        return " ".join(out.split())

    plain = help_text()  # no preset: the pendulum preset's values
    assert (
        "discount factor (default: 0.9; in [0, 1])" in plain and "those of preset pendulum" in plain
    )
    cartpole = help_text("--preset", "cartpole")
    assert "discount factor (default: 0.98; in [0, 1])" in cartpole
    assert "those of preset cartpole" in cartpole
    mujoco = help_text("--env", "Hopper-v5")
    assert "the recipe for Hopper-v5" in mujoco
    assert "rollout length per environment between updates (default: 32; >= 1)" in mujoco


def test_help_with_a_bad_preset_is_a_one_line_error(capsys):
    assert_main_error(run_main(capsys, "train", "--preset", "cartpol", "--help"), "cartpole")


def test_every_preset_gives_its_initial_noise_as_a_fraction_of_the_action_range():
    for name in C.available_presets():
        raw = yaml.safe_load((C.presets_dir() / f"{name}.yaml").read_text())
        assert "noise_std_relative" not in raw.get("policy", {}), name
        assert C.load_preset(name).policy.noise_std_relative, name
    assert C.TrainConfig().policy.noise_std_relative
