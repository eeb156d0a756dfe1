"""Declarations are the single source: docs/nodes.md, listings and JSON derive from them, and the
trainer node reaches every PPO option of ppokit's config."""

from __future__ import annotations

import dataclasses

from conftest import REPO
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
    assert agent.param("activation").default == "elu"
    assert agent.param("learning_rate").default == 3e-4
    assert agent.param("hidden_sizes").default == [64, 64]


def test_issue_names_and_defaults():
    t = node_class("PPOTrainerNode").spec
    defaults = {p.name: p.default for p in t.params}
    assert {
        k: defaults[k] for k in ("horizon_length", "epochs", "minibatch_size", "gamma", "lam")
    } == {
        "horizon_length": 2048,
        "epochs": 10,
        "minibatch_size": 64,
        "gamma": 0.99,
        "lam": 0.95,
    }
    assert {
        k: defaults[k] for k in ("clip_param", "value_coef", "entropy_coef", "max_grad_norm")
    } == {
        "clip_param": 0.2,
        "value_coef": 0.5,
        "entropy_coef": 0.01,
        "max_grad_norm": 0.5,
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
