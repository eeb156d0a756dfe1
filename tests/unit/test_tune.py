"""`ppokit tune`'s parts without training: space files against the config schema, the default
spaces, sampled values as config overrides, evaluations read from a growing metrics.csv, the
study's stored space, and SQLite's claim of a queued trial by one worker only."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from ppokit import config as C
from ppokit import tune_space as S
from ppokit.errors import ConfigError

optuna = pytest.importorskip("optuna", reason="ppokit tune needs the tune extra")

from ppokit import tune as T  # noqa: E402  (imports optuna lazily, but its tests need it)


def test_a_space_file_maps_config_keys_to_distributions():
    space = S.parse_space(
        {
            "algo.lr": {"low": 1e-5, "high": 1e-3, "log": True},
            "algo.num_epochs": {"low": 2, "high": 10},
            "algo": {"clip_coef": {"low": 0.1, "high": 0.3}},  # a section holding keys
            "policy.actor_hidden": {
                "choices": [[64, 64], "32,32"],
                "also": ["policy.critic_hidden"],
            },
            "algo.lr_schedule": {"choices": ["constant", "linear"]},
        },
        "test",
    )
    assert space["algo.lr"] == S.Param("algo.lr", "log", 1e-5, 1e-3, True)
    assert space["algo.num_epochs"].kind == "int"
    assert space["algo.clip_coef"].kind == "uniform"
    hidden = space["policy.actor_hidden"]
    assert hidden.choices == ("[64, 64]", "[32, 32]")  # lists as text: Optuna wants scalars
    params = {"policy.actor_hidden": "[32, 32]", "algo.num_minibatches": 4}
    space["algo.num_minibatches"] = S.Param("algo.num_minibatches", "categorical", choices=(4,))
    overrides = T.sampled_overrides(space, params)
    assert overrides["policy.actor_hidden"] == overrides["policy.critic_hidden"] == [32, 32]
    assert overrides["algo.minibatch_size"] is None  # the sampled minibatch count wins


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        ({"algo.lrr": {"low": 1e-4, "high": 1e-3}}, ["unknown config key 'algo.lrr'", "algo.lr"]),
        ({"algo.lr_schedule": {"low": 0, "high": 1}}, ["not numeric", "choices"]),
        ({"policy.actor_hidden": {"low": 16, "high": 64}}, ["not numeric"]),
        ({"algo.lr": {"low": 0.0, "high": 1e-3, "log": True}}, ["algo.lr", "out of range"]),
        ({"algo.gamma": {"low": 0.9, "high": 1.5}}, ["algo.gamma", "out of range"]),
        ({"algo.lr": {"low": 1e-3, "high": 1e-4}}, ["smaller than high"]),
        ({"algo.num_epochs": {"low": 1, "high": 3, "type": "log"}}, ["integer field"]),
        ({"algo.lr": {"low": 1e-4, "high": 1e-3, "typo": 1}}, ["unknown distribution field"]),
        ({"algo.lr_schedule": {"choices": ["constant", "linar"]}}, ["'linar'", "linear"]),
        ({"total_steps": {"low": 1, "high": 9}}, ["--steps"]),
        ({"algo.lr": 0.001}, ["expected a distribution"]),
        ({"policy.actor_hidden": {"choices": [[64]], "also": ["algo.lr"]}}, ["another type"]),
    ],
)
def test_space_errors_name_the_key_and_the_fix(data, fragments):
    with pytest.raises(ConfigError) as e:
        S.parse_space(data, "space file 's.yaml'")
    message = str(e.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("family", sorted(S._BATCH))
def test_every_family_has_a_default_space_its_preset_accepts(family):
    from ppokit.recipes import BATCHED, BOX, DISCRETE, MUJOCO, MULTI_MODAL

    preset = {r.name: r.preset for r in (MUJOCO, DISCRETE, BOX, MULTI_MODAL, BATCHED)}[family]
    space = S.default_space(family)
    assert {"algo.lr", "algo.gamma", "algo.lam", "env.num_envs", "algo.num_steps"} <= set(space)
    cfg = C.load_preset(preset)
    # The smallest and the largest choice of every dimension make configs the schema takes.
    for pick in (0, -1):
        params = {
            k: (p.choices[pick] if p.kind == "categorical" else (p.low, p.high)[pick])
            for k, p in space.items()
        }
        C.validate(T.trial_config(cfg, space, params))


def test_evaluations_are_read_from_complete_rows_of_a_growing_metrics_csv(tmp_path):
    path = tmp_path / "metrics.csv"
    assert T.read_evaluations(path) == []
    header = "global_step,charts/episode_return,eval/mean_return,eval/best_return\n"
    path.write_text(header + "256,10,,\n512,12,20.5,20.5\n768,13,18.0,20.5\n1024,14,1")
    assert T.read_evaluations(path) == [(512, 20.5), (768, 18.0)]  # last line unfinished
    path.write_text(header + "512,12,20.5,20.5\n1024,14,30,30\n1024,,31,\n")  # final eval: no best
    assert T.read_evaluations(path) == [(512, 20.5), (1024, 30.0)]


def test_aggregate_over_seeds():
    assert T.aggregate_fn("mean")([1.0, 2.0, 6.0]) == 3.0
    assert T.aggregate_fn("q0")([5.0, 1.0, 3.0]) == 1.0
    assert T.aggregate_fn("q50")([5.0, 1.0, 3.0]) == 3.0
    for bad in ("median", "q", "q101"):
        with pytest.raises(ConfigError, match="--aggregate"):
            T.aggregate_fn(bad)


def _spec(tmp_path: Path, **kw) -> T.TuneSpec:
    return T.TuneSpec(trials=2, steps=512, preset="cartpole", out=str(tmp_path / "o"), **kw)


def test_a_study_refuses_another_space_and_keeps_its_own(tmp_path):
    spec = _spec(tmp_path)
    Path(spec.out).mkdir()
    cfg, _ = T.base_config(spec)
    space = S.parse_space({"algo.lr": {"low": 1e-4, "high": 1e-2, "log": True}}, "a")
    T.open_study(spec, cfg, space)
    T.open_study(spec, cfg, space)  # the same space: the study continues
    other = S.parse_space({"algo.lr": {"low": 1e-4, "high": 1e-3, "log": True}}, "b")
    with pytest.raises(ConfigError, match=r"another search space \(algo.lr.high: 0.01 -> 0.001"):
        T.open_study(spec, cfg, other)
    cfg.algo.gamma = 0.5
    with pytest.raises(ConfigError, match=r"another base config.*algo.gamma"):
        T.open_study(spec, cfg, space)


def _claim_all(url: str, queue) -> None:
    study = optuna.load_study(study_name="s", storage=T.open_storage(url, 5))
    claimed = []
    for _ in range(25):
        trial_id = study._pop_waiting_trial_id()  # what study.ask() does with a queued trial
        if trial_id is not None:
            claimed.append(trial_id)
    queue.put(claimed)


def test_sqlite_workers_never_claim_one_queued_trial_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=T.open_storage(url, 5))
    for x in range(30):
        study.enqueue_trial({"x": x})
    ctx = multiprocessing.get_context("fork")  # each opens its own storage
    queue = ctx.Queue()
    workers = [ctx.Process(target=_claim_all, args=(url, queue)) for _ in range(3)]
    for w in workers:
        w.start()
    claimed = [i for _ in workers for i in queue.get(timeout=120)]
    for w in workers:
        w.join()
    assert sorted(claimed) == sorted({t._trial_id for t in study.trials})  # each exactly once


def test_the_baseline_trial_is_the_base_config_where_the_space_holds_its_values(tmp_path):
    spec = T.TuneSpec(trials=2, steps=512, preset="halfcheetah", out=str(tmp_path / "o"))
    Path(spec.out).mkdir()
    cfg, family = T.base_config(spec)
    space = S.default_space(family)
    study = T.open_study(spec, cfg, space)
    T.enqueue_baseline(study, space, cfg)
    (queued,) = study.trials
    params = queued.params if queued.params else queued.system_attrs["fixed_params"]
    # halfcheetah sets minibatch_size 64: the same minibatches are 64 x 32 / 64 = 32 of them
    assert params["algo.num_minibatches"] == 32
    assert params["algo.lr"] == 3e-4 and params["policy.actor_hidden"] == "[64, 64]"
    assert set(params) == set(space)  # every value of the preset is in its family's space
    assert C.to_dict(T.trial_config(cfg, space, params)) == C.to_dict(
        C.apply_overrides(cfg, {"algo.num_minibatches": 32, "algo.minibatch_size": None}, "t")
    )  # the baseline trains exactly the preset's update
