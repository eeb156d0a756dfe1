"""ppokit.comfyui, the custom-node pack for a user's own ComfyUI: what ComfyUI's executor sees
(lazy loop inputs, hidden prompt inputs) and what executing an output node does (the workflow
handed to a running studio, or to `ppokit graph run` in a subprocess). ComfyUI itself is not
installed here: its executor is stood in for by calling the node functions as it does."""

from __future__ import annotations

import json

import pytest
from studio_util import request

from ppokit.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, handoff

pytestmark = pytest.mark.xdist_group("studio")


def test_classes_declare_lazy_loops_and_the_hidden_prompt():
    assert NODE_DISPLAY_NAME_MAPPINGS["PPOAgentNode"] == "PPO Agent"
    router = NODE_CLASS_MAPPINGS["ObservationRouterNode"]
    inputs = router.INPUT_TYPES()
    assert inputs["required"]["loop"][1]["lazy"] is True  # ComfyUI sees no cycle
    assert "lazy" not in inputs["required"]["initial"][1]
    assert inputs["hidden"] == {
        "prompt": "PROMPT",
        "extra_pnginfo": "EXTRA_PNGINFO",
        "unique_id": "UNIQUE_ID",
    }
    assert router().check_lazy_status() == []


def test_other_nodes_return_placeholders():
    agent = NODE_CLASS_MAPPINGS["PPOAgentNode"]()
    assert agent.run(prompt={}, observations=None) == (None, None)


def test_an_output_node_queues_the_workflow_in_a_running_studio(
    studio, cartpole_prompt, monkeypatch
):
    prompt, workflow = cartpole_prompt(total_steps=32)
    monkeypatch.setenv("PPOKIT_STUDIO_URL", studio.url)
    monkeypatch.setattr(handoff, "_handled", {})
    node = NODE_CLASS_MAPPINGS["EvaluateNode"]()
    out = node.run(prompt=prompt, extra_pnginfo={"workflow": workflow}, unique_id="7")
    (line,) = out["ui"]["text"]
    assert line.startswith(f"queued in ppokit studio {studio.url}: prompt ")
    prompt_id = line.rsplit(" ", 1)[1]
    assert request(f"{studio.url}/api/jobs/{prompt_id}")[0] == 200
    # a second output node of the same prompt does not queue it again
    again = NODE_CLASS_MAPPINGS["SaveCheckpointNode"]().run(
        prompt=prompt, extra_pnginfo={}, unique_id="8"
    )
    assert again["ui"]["text"] == [line]


def test_without_a_studio_it_runs_graph_run_in_a_subprocess(cartpole_prompt, monkeypatch, tmp_path):
    prompt, _ = cartpole_prompt(total_steps=32)
    monkeypatch.delenv("PPOKIT_STUDIO_URL", raising=False)
    monkeypatch.setenv("PPOKIT_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(handoff, "_handled", {})
    out = NODE_CLASS_MAPPINGS["EvaluateNode"]().run(prompt=json.loads(json.dumps(prompt)))
    text = "\n".join(out["ui"]["text"])
    assert "eval (2 episodes): return" in text and "output directory:" in text
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "eval.json").is_file()
