"""Config resolution and validation: unknown keys, types, presets, cross-field checks, YAML
round-trip, and command-line values read with YAML rules."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from ppokit import cli
from ppokit import config as C
from ppokit.config import ConfigError, TrainConfig, load_config


def overrides_from_cli(*argv: str) -> dict:
    return cli.config_overrides(cli.build_parser().parse_args(["train", *argv]))


def write_yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return str(path)


# --- unknown keys ------------------------------------------------------------------------------


def test_unknown_key_in_yaml_file_names_key_file_and_close_names(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", {"algo": {"lrr": 0.1}})
    with pytest.raises(ConfigError) as info:
        load_config(config_file=path)
    message = str(info.value)
    assert "'algo.lrr'" in message
    assert "algo.lr" in message.split("did you mean", 1)[1]
    assert "bad.yaml" in message


def test_unknown_top_level_key_in_yaml_file_suggests_dotted_name(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", {"num_envs": 4})
    with pytest.raises(ConfigError, match=r"'num_envs'.*did you mean env\.num_envs"):
        load_config(config_file=path)


def test_unknown_key_in_preset(tmp_path, monkeypatch):
    (tmp_path / "mypreset.yaml").write_text("env:\n  id: Pendulum-v1\n  num_env: 4\n")
    monkeypatch.setattr(C, "presets_dir", lambda: tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(preset="mypreset")
    message = str(info.value)
    assert "'env.num_env'" in message and "preset 'mypreset'" in message
    assert "env.num_envs" in message


def test_unknown_cli_flag_exits_2_with_one_line_suggestion(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--algo.lrr", "1e-3"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "'algo.lrr'" in err and "did you mean algo.lr" in err


def test_unknown_cli_flag_with_dashes_and_equals_is_suggested(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--algo.num-step=5"])
    assert "did you mean algo.num_steps" in capsys.readouterr().err


def test_non_mapping_yaml_file_is_rejected(tmp_path):
    path = write_yaml(tmp_path / "list.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(config_file=path)


def test_missing_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(config_file=tmp_path / "nope.yaml")
    path = write_yaml(tmp_path / "broken.yaml", "algo: {lr: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config_file=path)


# --- value types -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "pattern"),
    [
        ("algo.num_steps", "abc", r"algo\.num_steps: expected an integer, got 'abc'"),
        ("algo.num_steps", 2.5, r"algo\.num_steps: expected an integer"),
        ("algo.num_steps", True, r"algo\.num_steps: expected an integer"),
        ("env.normalize_obs", "yes", r"env\.normalize_obs: expected true or false, got 'yes'"),
        ("env.normalize_obs", 1, r"env\.normalize_obs: expected true or false"),
        ("algo.lr", "fast", r"algo\.lr: expected a number"),
        ("policy.activation", "tahn", r"policy\.activation: 'tahn' is not one of .*'tanh'"),
        ("env.vectorization", "threads", r"env\.vectorization: 'threads' is not one of"),
        ("policy.actor_hidden", [32, "x"], r"policy\.actor_hidden\[1\]: expected an integer"),
        ("env.max_episode_steps", "long", r"env\.max_episode_steps: expected int or null"),
        ("env.kwargs", [1], r"env\.kwargs: expected a mapping"),
        ("env.id", 5, r"env\.id: expected a string"),
    ],
)
def test_wrong_value_types_are_rejected(key, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(overrides={key: value})


def test_wrong_types_in_yaml_file(tmp_path):
    # Quoted "yes" is a string in YAML, not a bool.
    path = write_yaml(tmp_path / "c.yaml", 'env:\n  normalize_obs: "yes"\n')
    with pytest.raises(ConfigError, match="env.normalize_obs: expected true or false"):
        load_config(config_file=path)
    path = write_yaml(tmp_path / "c.yaml", "algo:\n  num_epochs: ten\n")
    with pytest.raises(ConfigError, match="algo.num_epochs: expected an integer"):
        load_config(config_file=path)


def test_lossless_conversions_are_accepted():
    cfg = load_config(overrides={"algo.lr": 1, "total_steps": 1e3, "policy.actor_hidden": (8, 8)})
    assert cfg.algo.lr == 1.0 and isinstance(cfg.algo.lr, float)
    assert cfg.total_steps == 1000 and isinstance(cfg.total_steps, int)
    assert cfg.policy.actor_hidden == [8, 8]


# --- presets -----------------------------------------------------------------------------------


def test_unknown_preset_lists_available_ones():
    with pytest.raises(ConfigError) as info:
        load_config(preset="pendulm")
    message = str(info.value)
    assert "'pendulm'" in message and "did you mean 'pendulum'" in message
    assert "available: " + ", ".join(C.available_presets()) in message


def test_preset_and_config_file_are_exclusive(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", {"seed": 3})
    with pytest.raises(ConfigError, match="either --preset or --config"):
        load_config(preset="pendulum", config_file=path)


@pytest.mark.parametrize("name", C.available_presets())
def test_every_preset_loads_and_validates(name):
    cfg = load_config(preset=name)
    assert cfg.preset == name
    C.validate(cfg)
    assert C.minibatch_size(cfg) > 0
    # Every key written in the preset file took effect.
    data = yaml.safe_load((C.presets_dir() / f"{name}.yaml").read_text())
    resolved = C.to_dict(cfg)
    for section, values in data.items():
        if isinstance(values, dict) and section in C.SECTIONS:
            for key, value in values.items():
                assert resolved[section][key] == value, f"{section}.{key}"
        else:
            assert resolved[section] == values


def test_preset_on_defaults_and_overrides_on_preset(tmp_path, monkeypatch):
    (tmp_path / "p.yaml").write_text("env:\n  id: CartPole-v1\nalgo:\n  gamma: 0.9\n  lr: 1.0e-3\n")
    monkeypatch.setattr(C, "presets_dir", lambda: tmp_path)
    assert C.available_presets() == ["p"]
    cfg = load_config(preset="p", overrides={"algo.lr": 5e-4, "env.num_envs": 2})
    assert cfg.env.id == "CartPole-v1" and cfg.algo.gamma == 0.9  # from the preset
    assert cfg.algo.lr == 5e-4 and cfg.env.num_envs == 2  # overrides win
    assert cfg.algo.num_epochs == TrainConfig().algo.num_epochs  # untouched: the default
    assert cfg.preset == "p"


def test_cli_without_subcommand_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_cli_minibatch_disagreement_is_a_one_line_error(capsys):
    argv = ["train", "--env.num_envs", "2", "--algo.num_steps", "16", "--algo.num_minibatches", "5"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: algo.num_minibatches 5 must divide the batch size 32")
    assert err.count("\n") == 1


# --- cross-field validation --------------------------------------------------------------------


def small(**overrides):
    base = {"env.num_envs": 2, "algo.num_steps": 16}  # batch 32
    return load_config(overrides={**base, **overrides})


def test_num_minibatches_and_minibatch_size_must_agree():
    with pytest.raises(ConfigError) as info:
        small(**{"algo.num_minibatches": 4, "algo.minibatch_size": 16})
    message = str(info.value)
    assert "num_minibatches 4" in message and "minibatch_size 16" in message
    assert "32" in message
    assert C.minibatch_size(small(**{"algo.num_minibatches": 4, "algo.minibatch_size": 8})) == 8
    assert C.minibatch_size(small(**{"algo.num_minibatches": None, "algo.minibatch_size": 4})) == 4
    assert C.minibatch_size(small(**{"algo.num_minibatches": 8})) == 4


@pytest.mark.parametrize(
    "overrides",
    [
        {"algo.num_minibatches": 5},
        {"algo.num_minibatches": None, "algo.minibatch_size": 5},
        {"algo.num_minibatches": None, "algo.minibatch_size": None},
        {"algo.num_minibatches": 0},
    ],
)
def test_minibatch_settings_that_cannot_split_the_batch(overrides):
    with pytest.raises(ConfigError, match="minibatch"):
        small(**overrides)


def test_kl_early_stop_needs_target_kl():
    with pytest.raises(ConfigError, match="algo.kl_early_stop needs algo.target_kl"):
        load_config(overrides={"algo.kl_early_stop": True})
    cfg = load_config(overrides={"algo.kl_early_stop": True, "algo.target_kl": 0.02})
    assert cfg.algo.target_kl == 0.02


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"algo.lr_schedule": "adaptive"}, "adaptive needs algo.target_kl"),
        (
            {"algo.lr_schedule": "adaptive", "algo.target_kl": 0.01, "algo.lr": 0.1},
            "must lie in",
        ),
        ({"algo.weight_decay": 0.01}, "adamw"),
        ({"env.num_envs": 0}, "env.num_envs must be > 0"),
        ({"algo.gamma": 1.5}, r"algo.gamma must be in \[0, 1\]"),
        ({"policy.log_std_min": 3.0}, "log_std_min must be smaller"),
    ],
)
def test_other_cross_field_checks(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(overrides=overrides)


# --- YAML round-trip ---------------------------------------------------------------------------


def test_save_then_load_gives_an_equal_config(tmp_path):
    cfg = load_config(
        preset="pendulum",
        overrides={
            "env.kwargs": {"g": 9.5},
            "env.max_episode_steps": 150,
            "policy.actor_hidden": [32, 16, 8],
            "policy.activation": "elu",
            "algo.adam_eps": 1e-7,
            "algo.target_kl": 0.015,
            "algo.lr_schedule": "adaptive",
            "algo.lr": 3e-4,
            "algo.num_minibatches": None,
            "algo.minibatch_size": 64,
            "log.run_name": "round-trip",
            "torch_threads": None,
            "seed": 12345,
        },
    )
    path = tmp_path / "config.yaml"
    C.save_config(cfg, path)
    again = load_config(config_file=path)
    assert again == cfg
    assert again.preset == "pendulum"
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
    # And the saved file holds every field (the fully resolved config).
    saved = yaml.safe_load(path.read_text())
    for name, _, _ in C.iter_fields():
        node = saved
        for part in name.split("."):
            assert part in node, name
            node = node[part]


def test_default_config_round_trips(tmp_path):
    path = tmp_path / "config.yaml"
    C.save_config(TrainConfig(), path)
    assert load_config(config_file=path) == TrainConfig()


def test_configs_do_not_share_mutable_defaults():
    a, b = TrainConfig(), TrainConfig()
    a.policy.actor_hidden.append(7)
    a.env.kwargs["x"] = 1
    assert b.policy.actor_hidden == [64, 64] and b.env.kwargs == {}


# --- command-line values -----------------------------------------------------------------------


def test_cli_values_follow_yaml_rules():
    assert overrides_from_cli("--algo.lr", "1e-3") == {"algo.lr": 1e-3}
    assert overrides_from_cli("--algo.lr=2.5e-4") == {"algo.lr": 2.5e-4}
    assert overrides_from_cli("--algo.target_kl", "null") == {"algo.target_kl": None}
    assert overrides_from_cli("--log.wandb", "true") == {"log.wandb": True}
    assert overrides_from_cli("--env.kwargs", "{g: 9.5}") == {"env.kwargs": {"g": 9.5}}
    assert overrides_from_cli("--env", "HalfCheetah-v5") == {"env.id": "HalfCheetah-v5"}
    assert overrides_from_cli("--algo.num-steps", "64") == {"algo.num_steps": 64}
    # Strings stay strings for str fields, even when they look like numbers.
    assert overrides_from_cli("--log.run_name", "123") == {"log.run_name": "123"}
    assert overrides_from_cli("--log.run_name", "null") == {"log.run_name": None}


@pytest.mark.parametrize("text", ["[32,32]", "[32, 32]", "32,32"])
def test_cli_list_values(text):
    cfg = load_config(overrides=overrides_from_cli("--policy.actor_hidden", text))
    assert cfg.policy.actor_hidden == [32, 32]


def test_cli_flags_resolve_to_a_validated_config():
    overrides = overrides_from_cli(
        "--env", "HalfCheetah-v5", "--algo.lr", "1e-3", "--policy.critic_hidden", "[128,128]"
    )
    cfg = load_config(preset="pendulum", overrides=overrides)
    assert cfg.env.id == "HalfCheetah-v5"
    assert cfg.algo.lr == 1e-3 and isinstance(cfg.algo.lr, float)
    assert cfg.policy.critic_hidden == [128, 128]


def test_cli_wrong_type_is_a_config_error(capsys):
    assert cli.main(["train", "--algo.num_steps", "many"]) == 2
    err = capsys.readouterr().err
    assert err == "error: algo.num_steps: expected an integer, got 'many'\n"


def test_every_config_field_has_a_flag_and_help():
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {opt for action in train._actions for opt in action.option_strings}
    for name, _, f in C.iter_fields():
        assert C.field_help(f), f"{name} has no help text"
        if name not in cli.NOT_FLAGS:
            assert f"--{name}" in flags, name


def test_recompute_advantages_is_refused_for_recurrent_policies():
    with pytest.raises(ConfigError, match="recompute_advantages supports feedforward"):
        load_config(
            preset="cartpole",
            overrides={"algo.recompute_advantages": True, "policy.memory": "gru"},
        )
    assert load_config(preset="cartpole", overrides={"algo.recompute_advantages": True})
