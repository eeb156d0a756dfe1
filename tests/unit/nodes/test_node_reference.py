"""Declarations are the single source: docs/nodes.md, listings and JSON derive from them, and the
trainer node reaches every PPO option of ppokit's config."""

from __future__ import annotations

import dataclasses

from conftest import REPO
from ppokit import config as C
from ppokit.config import AlgoConfig
from ppokit.nodes import node_class, node_classes, reference
from ppokit.nodes.declarations import PORT_TYPES


def test_docs_nodes_md_is_generated_from_the_declarations():
    assert (REPO / "docs" / "nodes.md").read_text() == reference.markdown(), (
        "docs/nodes.md is stale: run `ppokit graph nodes --markdown > docs/nodes.md`"
    )


def test_trainer_reaches_every_ppo_option():
    trainer = node_class("PPOTrainerNode").spec
    set_fields = {p.config for p in trainer.params if p.config}
    for f in dataclasses.fields(AlgoConfig):
        assert f"algo.{f.name}" in set_fields or f.name == "lr", f.name
    agent = node_class("PPOAgentNode").spec
    assert agent.param("learning_rate").config == "algo.lr"
    assert agent.param("normalize_observations").config == "policy.normalize_obs"
    assert trainer.param("scale_rewards").config == "algo.scale_rewards"


# Params that add a null meaning "taken from another param" to their field's type.
INHERITING = {("PPOTrainerNode", "learning_rate"), ("PPOAgentNode", "critic_hidden_sizes")}


def test_params_that_set_config_fields_take_range_and_default_from_the_field():
    """A node param accepts exactly the values its config field accepts, with the same default
    (`ppokit train` and a graph that leaves a param out train the same)."""
    checked = 0
    for cls in node_classes():
        for p in cls.spec.params:
            if p.config is None:
                continue
            tp, f = C.field_info(p.config)
            assert p.range == C.field_range(f), (cls.spec.type, p.name)
            if (cls.spec.type, p.name) in INHERITING:
                assert p.default is None and p.nullable, (cls.spec.type, p.name)
            elif p.required:  # a graph must say it (the env id)
                assert (cls.spec.type, p.name) == ("EnvNode", "env_id")
            else:
                assert p.default == C.field_default(f), (cls.spec.type, p.name)
                assert p.type == tp, (cls.spec.type, p.name)
            checked += 1
    assert checked > 40
    agent = node_class("PPOAgentNode").spec
    assert agent.param("obs_clip").range_text() == "> 0"
    assert agent.param("hidden_sizes").range_text() == ">= 1"  # each size
    trainer = node_class("PPOTrainerNode").spec
    assert trainer.param("gamma").range_text() == "in [0, 1]"
    assert trainer.param("lr_factor").range_text() == "> 1"


def test_issue_names_and_aliases():
    t = node_class("PPOTrainerNode").spec
    names = {p.name: p.config for p in t.params}
    assert {
        k: names[k]
        for k in ("horizon_length", "epochs", "clip_param", "value_coef", "entropy_coef")
    } == {
        "horizon_length": "algo.num_steps",
        "epochs": "algo.num_epochs",
        "clip_param": "algo.clip_coef",
        "value_coef": "algo.vf_coef",
        "entropy_coef": "algo.ent_coef",
    }
    assert t.param("num_epochs") is t.param("epochs") and t.param("gae_lambda") is t.param("lam")
    assert [i.name for i in t.inputs] == ["states", "policy_outputs", "rewards", "dones", "model"]
    assert [o.name for o in t.outputs] == ["training_complete", "loss_info"]


def test_every_port_type_is_documented_and_json_lists_every_node():
    used = {t for cls in node_classes() for i in cls.spec.inputs for t in i.types}
    used |= {o.type for cls in node_classes() for o in cls.spec.outputs}
    assert used <= set(PORT_TYPES)
    data = reference.as_json()
    assert list(data) == [cls.spec.type for cls in node_classes()]
    assert data["EnvNode"]["params"][0]["required"] is True
