"""Config resolution and validation: unknown keys, types, presets, cross-field checks, YAML
round-trip, and command-line values read with YAML rules."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from re import escape as re_escape

import pytest
import yaml

from ppokit import cli
from ppokit import config as C
from ppokit.config import ConfigError, TrainConfig, load_config
from ppokit.errors import CheckpointError
from ppokit_runs import assert_main_error, run_main


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
        (
            "policy.normalize_obs",
            "yes",
            r"policy\.normalize_obs: expected true or false, got 'yes'",
        ),
        ("policy.normalize_obs", 1, r"policy\.normalize_obs: expected true or false"),
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
    path = write_yaml(tmp_path / "c.yaml", 'policy:\n  normalize_obs: "yes"\n')
    with pytest.raises(ConfigError, match="policy.normalize_obs: expected true or false"):
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
        ({"policy.log_std_min": 3.0}, "log_std_min 3.0 must be smaller"),
        ({"algo.optimizer": "adamw", "algo.weight_decay": 0.01, "eval.patience": 3}, "eval.every"),
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


def test_env_kwargs_merge_key_by_key_into_the_presets():
    """A flag or file naming env.kwargs adds to the preset's: nested mappings merge, a value
    given replaces the preset's, and keys the flag leaves out keep the preset's values."""
    preset = load_config(preset="ant-locomotion-batched-gru").env.kwargs
    assert preset["control"]["type"] == "position"
    merged = load_config(
        preset="ant-locomotion-batched-gru",
        overrides={"env.kwargs": {"rewards": {"torques": 0.0}, "control": {"damping": 10.0}}},
    ).env.kwargs
    assert merged == {
        "control": {**preset["control"], "damping": 10.0},
        "rewards": {"torques": 0.0},
    }
    ant = load_config(preset="ant", overrides={"env.kwargs": {"ctrl_cost_weight": 0.1}})
    assert ant.env.kwargs == {"include_cfrc_ext_in_observation": False, "ctrl_cost_weight": 0.1}
    # over the defaults (empty kwargs, as a run's saved config.yaml is read) it stays as given
    assert load_config(overrides={"env.kwargs": {"g": 9.5}}).env.kwargs == {"g": 9.5}


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


# --- ranges: declared once on the fields, enforced at every entry point ---------------------------

# (key, a value out of its range, the range as the error states it)
OUT_OF_RANGE = [
    ("algo.clip_coef", -1.0, "must be > 0"),
    ("algo.vf_coef", -1.0, "must be >= 0"),
    ("algo.max_grad_norm", -1.0, "must be >= 0"),
    ("algo.gamma", 1.5, "must be in [0, 1]"),
    ("algo.lr", 0.0, "must be > 0"),
    ("algo.target_kl", 0.0, "must be > 0 or null"),
    ("env.max_episode_steps", 0, "must be >= 1 or null"),
    ("env.num_envs", 0, "must be >= 1"),
    ("policy.actor_hidden", [64, 0], "each item must be >= 1"),
    ("policy.obs_clip", 0.0, "must be > 0"),
    ("log.checkpoint_every", -1, "must be >= 0"),
    ("log.keep_checkpoints", 0, "must be >= 1"),
    ("eval.episodes", -1, "must be >= 0"),
    ("ema.decay", 1.0, "must be in [0, 1)"),
    ("torch_threads", 0, "must be >= 1 or null"),
]
CASE_IDS = [key for key, _, _ in OUT_OF_RANGE]


def default_of(key: str) -> str:
    return C.show(C.field_default(C.field_info(key)[1]))


def nested(key: str, value) -> dict:
    section, _, leaf = key.rpartition(".")
    return {section: {leaf: value}} if section else {leaf: value}


@pytest.mark.parametrize(("key", "value", "must"), OUT_OF_RANGE, ids=CASE_IDS)
def test_out_of_range_flag_is_a_one_line_error(capsys, key, value, must):
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    err = assert_main_error(
        run_main(capsys, "train", f"--{key}", text, "--print-config"), key, must
    )
    assert f"(default: {default_of(key)})" in err


@pytest.mark.parametrize(("key", "value", "must"), OUT_OF_RANGE, ids=CASE_IDS)
def test_out_of_range_value_in_a_yaml_file(tmp_path, key, value, must):
    path = write_yaml(tmp_path / "bad.yaml", nested(key, value))
    with pytest.raises(ConfigError) as info:
        load_config(config_file=path)
    message = str(info.value)
    assert message.startswith(f"{key}: {C.show(value)} in config file '{path}' is out of range")
    assert must in message and "\n" not in message


@pytest.mark.parametrize(("key", "value", "must"), OUT_OF_RANGE, ids=CASE_IDS)
def test_out_of_range_value_through_apply_overrides(key, value, must):
    with pytest.raises(ConfigError, match=re_escape(must)):
        C.apply_overrides(TrainConfig(), {key: value}, "overrides")


@pytest.mark.parametrize(("key", "value", "must"), OUT_OF_RANGE, ids=CASE_IDS)
def test_out_of_range_value_in_a_hand_built_config_stops_the_trainer(tmp_path, key, value, must):
    from ppokit.trainer import Trainer

    cfg = TrainConfig()
    cfg.log.root = str(tmp_path)
    *parents, leaf = key.split(".")
    setattr(getattr(cfg, parents[0]) if parents else cfg, leaf, value)
    with pytest.raises(ConfigError) as info:
        Trainer(cfg)  # refused before anything is built or written
    assert str(info.value).startswith(f"{key}: {C.show(value)} is out of range: {must}")
    assert list(tmp_path.iterdir()) == []


def test_a_preset_with_an_out_of_range_value_names_the_preset(tmp_path, monkeypatch):
    (tmp_path / "p.yaml").write_text("algo:\n  clip_coef: -0.2\n")
    monkeypatch.setattr(C, "presets_dir", lambda: tmp_path)
    with pytest.raises(ConfigError, match=r"algo\.clip_coef: -0\.2 in preset 'p' is out of range"):
        load_config(preset="p")


def test_boundaries_and_null_are_accepted():
    cfg = load_config(
        overrides={
            "algo.gamma": 1,
            "algo.lam": 0,
            "algo.vf_coef": 0,
            "algo.max_grad_norm": 0,
            "algo.reward_clip": 0,
            "log.checkpoint_every": 0,
            "eval.episodes": 0,
            "env.max_episode_steps": 1,
            "algo.target_kl": None,
            "torch_threads": None,
            "seed": 0,
        }
    )
    assert cfg.algo.gamma == 1.0 and isinstance(cfg.algo.gamma, float)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_numbers_must_be_finite(value):
    with pytest.raises(ConfigError, match=r"algo\.lr: (nan|inf|-inf) .* must be > 0"):
        load_config(overrides={"algo.lr": value})
    with pytest.raises(ConfigError, match="must be a finite number"):
        load_config(overrides={"policy.log_std_min": value})


# Numeric fields with no bounds, each for a reason; every other number declares its range.
UNBOUNDED = {
    "policy.log_std_min": "any log-std (validate: below log_std_max)",
    "policy.log_std_max": "any log-std",
    "eval.target_return": "returns have any sign and scale",
}


def test_every_numeric_field_declares_a_range():
    for name, tp, f in C.iter_fields():
        numbers = {int, float}
        args = {tp, *typing.get_args(tp)}
        args |= {a for t in list(args) for a in typing.get_args(t)}  # list items
        if not args & numbers:
            continue
        has_range = C.field_range(f).text() != ""
        assert has_range != (name in UNBOUNDED), name
        if has_range:  # the default lies in it
            C.check_value(name, C.field_default(f))


def test_validate_checks_types_of_a_hand_built_config_and_stores_conversions():
    cfg = TrainConfig()
    cfg.algo.lr = 1  # an int where a float is meant: converted
    cfg.policy.actor_hidden = (32, 32)  # a tuple: stored as a list (YAML writes lists)
    C.validate(cfg)
    assert cfg.algo.lr == 1.0 and isinstance(cfg.algo.lr, float)
    assert cfg.policy.actor_hidden == [32, 32]
    cfg.algo.num_steps = "many"
    with pytest.raises(ConfigError, match="algo.num_steps: expected an integer, got 'many'"):
        C.validate(cfg)


def test_help_shows_each_fields_range(capsys):
    code, out, _ = run_main(capsys, "train", "--help")
    assert code == 0
    text = " ".join(out.split())  # argparse wraps lines
    pendulum = C.load_preset("pendulum")  # the values plain --help shows
    assert f"discount factor (default: {pendulum.algo.gamma}; in [0, 1])" in text
    assert f"PPO ratio clip range (default: {pendulum.algo.clip_coef}; > 0)" in text
    assert f"(default: {pendulum.policy.actor_hidden}; items >= 1)" in text
    assert "the env's own (default: None; >= 1 or null)" in text  # env.max_episode_steps
    assert "--env.normalize_obs" not in out  # old names work but are not listed


def test_recurrent_only_rules_live_in_validate():
    """The rules PPO.__init__ repeated (compile, EMA with memory) are config rules."""
    base = {"policy.memory": "gru", "algo.num_minibatches": 1}
    with pytest.raises(ConfigError, match="algo.compile does not support recurrent"):
        load_config(overrides={**base, "algo.compile": True})
    with pytest.raises(ConfigError, match="ema.decay does not support recurrent"):
        load_config(overrides={**base, "ema.decay": 0.9})


# --- an empty config file --------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n"])
def test_an_empty_config_file_is_an_error_naming_it(tmp_path, capsys, text):
    path = write_yaml(tmp_path / "empty.yaml", text)
    with pytest.raises(ConfigError, match=f"config file '{re_escape(path)}' is empty"):
        load_config(config_file=path)
    assert_main_error(run_main(capsys, "train", "--config", path), "empty.yaml", "is empty")


def test_an_explicit_empty_mapping_means_the_defaults(tmp_path):
    assert load_config(config_file=write_yaml(tmp_path / "c.yaml", "{}\n")) == TrainConfig()


# --- keys that moved section ----------------------------------------------------------------

OLD_KEYS = [
    ("env.normalize_obs", "policy.normalize_obs", False),
    ("env.obs_clip", "policy.obs_clip", 5.0),
    ("env.scale_rewards", "algo.scale_rewards", False),
    ("env.reward_clip", "algo.reward_clip", 3.0),
]


@pytest.fixture
def fresh_notes(monkeypatch):
    """Each test sees the notes its old keys print (they are printed once per process)."""
    monkeypatch.setattr(C, "_noted", set())


def get(cfg: TrainConfig, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("note: ")]


@pytest.mark.parametrize(("old", "new", "value"), OLD_KEYS, ids=[o for o, _, _ in OLD_KEYS])
def test_old_flag_maps_to_the_new_key_with_one_note(capsys, fresh_notes, old, new, value):
    code, out, err = run_main(
        capsys,
        "train",
        f"--{old}",
        str(value).lower(),
        f"--{old.replace('_', '-')}",
        str(value).lower(),
        "--print-config",
    )
    assert code == 0, err
    assert get(C.from_dict(yaml.safe_load(out)), new) == value
    assert notes(err) == [
        f"note: {old} is now {new} (found in command-line overrides); the old name still works"
        f" but will be removed: use {new}"
    ]
    assert old.split(".")[1] not in yaml.safe_load(out)["env"]  # written under the new name


@pytest.mark.parametrize(("old", "new", "value"), OLD_KEYS, ids=[o for o, _, _ in OLD_KEYS])
def test_old_key_in_a_yaml_file_maps_with_a_note(tmp_path, capsys, fresh_notes, old, new, value):
    path = write_yaml(tmp_path / "old.yaml", nested(old, value))
    cfg = load_config(config_file=path)
    assert get(cfg, new) == value
    assert notes(capsys.readouterr().err) == [
        f"note: {old} is now {new} (found in config file '{path}'); the old name still works"
        f" but will be removed: use {new}"
    ]
    load_config(config_file=path)  # once per process
    assert notes(capsys.readouterr().err) == []


def test_old_run_config_yaml_loads_to_the_same_config(tmp_path, capsys, fresh_notes):
    """A config.yaml saved before the keys moved (all four under env:) resolves as then."""
    cfg = load_config(preset="cartpole", overrides={"policy.obs_clip": 5.0, "algo.reward_clip": 3})
    old = C.to_dict(cfg)
    for name, new in C.RENAMED.items():
        section, leaf = new.split(".")
        old["env"][name.split(".")[1]] = old[section].pop(leaf)
    path = write_yaml(tmp_path / "config.yaml", yaml.safe_dump(old, sort_keys=False))
    assert load_config(config_file=path) == cfg
    assert len(notes(capsys.readouterr().err)) == 4


def test_old_keys_in_a_checkpoint_config(capsys, fresh_notes):
    from ppokit.policy import checkpoint_config
    from ppokit.trainer import check_resume_compatible

    now = load_config(overrides={"policy.normalize_obs": False, "algo.scale_rewards": False})
    saved = C.to_dict(now)
    saved["env"]["normalize_obs"] = saved["policy"].pop("normalize_obs")
    saved["env"]["scale_rewards"] = saved["algo"].pop("scale_rewards")
    assert checkpoint_config({"config": saved, "path": "old.pt"}) == now
    check_resume_compatible(saved, now)  # the same config: resumable
    assert len(notes(capsys.readouterr().err)) == 2
    changed = C.apply_overrides(now, {"policy.normalize_obs": True}, "test")
    with pytest.raises(
        CheckpointError, match="policy.normalize_obs: checkpoint False, config True"
    ):
        check_resume_compatible(saved, changed)


def test_old_keys_through_apply_overrides_and_conflicts(capsys, fresh_notes):
    cfg = C.apply_overrides(TrainConfig(), {"env.reward_clip": 2}, "my overrides")
    assert cfg.algo.reward_clip == 2.0
    assert "(found in my overrides)" in capsys.readouterr().err
    # Old and new name with the same value: fine; with different values: an error.
    same = {"env.scale_rewards": False, "algo.scale_rewards": False}
    assert C.apply_overrides(TrainConfig(), same, "x").algo.scale_rewards is False
    with pytest.raises(ConfigError) as info:
        C.apply_overrides(
            TrainConfig(), {"policy.obs_clip": 4.0, "env.obs_clip": 5}, "config file 'c.yaml'"
        )
    assert str(info.value) == (
        "env.obs_clip (the old name of policy.obs_clip) is 5.0 but policy.obs_clip is 4.0 in"
        " config file 'c.yaml'; give only policy.obs_clip"
    )


def test_old_and_new_flag_with_different_values_is_a_one_line_error(capsys, fresh_notes):
    assert_main_error(
        run_main(capsys, "train", "--env.normalize_obs", "false", "--policy.normalize_obs", "true"),
        "env.normalize_obs (the old name of policy.normalize_obs) is false but"
        " policy.normalize_obs is true",
    )


# --- presets resolve as before the schema change ----------------------------------------------

RESOLVED = Path(__file__).parent / "fixtures" / "presets_resolved.json"


@pytest.mark.parametrize("name", C.available_presets())
def test_presets_resolve_to_the_recorded_values(name):
    """fixtures/presets_resolved.json holds every preset's resolved values as recorded before
    the keys moved section (at 0d0fedf, old names); renamed keys compare under their new names.
    A preset or default changed on purpose: update its entry."""
    recorded = json.loads(RESOLVED.read_text())
    assert name in recorded, f"record the new preset {name!r} in {RESOLVED}"
    then = {C.RENAMED.get(k, k): v for k, v in recorded[name].items()}
    cfg = C.load_preset(name)
    now = {key: get(cfg, key) for key, _, _ in C.iter_fields()}
    assert now == then
