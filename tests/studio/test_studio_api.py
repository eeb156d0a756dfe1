"""`ppokit studio` through its HTTP and websocket API, as the ComfyUI frontend uses it: every
endpoint, the origin, size and folder checks, validation as node_errors, a queued run's events
and run directory, interrupts, and a saved workflow that `ppokit graph run` reads unchanged."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import aiohttp
import pytest
from studio_util import request

from ppokit.nodes import load_graph
from ppokit.nodes.validate import check
from ppokit_testutil import cli_env

pytestmark = pytest.mark.xdist_group("studio")
JSON = {"Content-Type": "application/json"}


def get(studio, path):
    code, body = request(studio.url + path)
    try:
        return code, json.loads(body)
    except ValueError:
        return code, body


def test_starts_fast_without_importing_torch(studio, tmp_path):
    # < 3 s on a quiet machine (benchmarks/RESULTS.md); the bound leaves room for a loaded one
    assert studio.startup_s < 10, f"ppokit studio took {studio.startup_s:.1f} s to answer"
    code = (
        "import sys, ppokit.cli, ppokit.studio.server;"
        " ppokit.cli.build_parser().parse_args(['studio', '--env-map', 'A=B']);"
        " print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(tmp_path)
    )
    assert out.stdout.strip() == "False", out.stderr


def test_frontend_and_the_small_endpoints(studio):
    code, body = request(studio.url + "/")
    assert code == 200 and b"<html" in body.lower()
    assert get(studio, "/api/users") == (200, {"storage": "server", "migrated": True})
    code, stats = get(studio, "/api/system_stats")
    assert code == 200 and stats["devices"][0]["type"] == "cpu"
    assert stats["system"]["required_frontend_version"] == "1.58.1"
    assert get(studio, "/api/features")[0] == 200
    assert get(studio, "/api/extensions") == (200, ["/extensions/ppokit/ppokit.js"])
    code, js = request(studio.url + "/extensions/ppokit/ppokit.js")
    assert code == 200 and b"registerExtension" in js
    assert get(studio, "/api/i18n") == (200, {})
    assert get(studio, "/api/prompt") == (200, {"exec_info": {"queue_remaining": 0}})
    assert get(studio, "/api/queue") == (200, {"queue_running": [], "queue_pending": []})
    assert get(studio, "/api/jobs?status=in_progress,pending")[1]["jobs"] == []
    assert request(studio.url + "/api/interrupt", {}, headers=JSON)[0] == 200
    assert request(studio.url + "/api/queue", {"clear": True}, headers=JSON)[0] == 200


def test_object_info_is_the_node_declarations(studio, object_info):
    assert object_info["PPOAgentNode"]["output_name"] == ["policy_output", "model"]
    assert get(studio, "/api/object_info/EnvNode")[1]["EnvNode"]["category"] == "RL/Env"
    assert get(studio, "/api/object_info/os.system") == (200, {})


def test_templates_are_the_example_graphs(studio):
    names = get(studio, "/api/workflow_templates")[1]["ppokit"]
    assert {"cartpole_ppo", "pendulum_ppo", "cartpole_multi_env", "cartpole_hierarchical"} <= set(
        names
    )
    code, wf = get(studio, "/api/workflow_templates/ppokit/pendulum_ppo.json")
    assert code == 200 and {n["type"] for n in wf["nodes"]} >= {
        "PPOTrainerNode",
        "ExportPolicyNode",
    }
    assert get(studio, "/api/workflow_templates/ppokit/nope.json")[0] == 404
    assert get(studio, "/api/workflow_templates/other/cartpole_ppo.json")[0] == 404


def test_settings_and_userdata_live_in_the_user_folder(studio):
    assert request(studio.url + "/api/settings/Comfy.Locale", "en", headers=JSON)[0] == 200
    assert request(studio.url + "/api/settings", {"Comfy.X": 1}, headers=JSON)[0] == 200
    assert get(studio, "/api/settings")[1] == {"Comfy.Locale": "en", "Comfy.X": 1}
    assert get(studio, "/api/settings/Comfy.X")[1] == 1
    assert json.loads((studio.tmp / "user" / "comfy.settings.json").read_text())["Comfy.X"] == 1
    url = studio.url + "/api/userdata/workflows%2Fa.json"
    code, body = request(url + "?overwrite=true&full_info=true", b'{"nodes": []}', method="POST")
    assert code == 200 and json.loads(body)["path"] == "workflows/a.json"
    assert (studio.tmp / "user" / "workflows" / "a.json").read_bytes() == b'{"nodes": []}'
    assert request(url + "?overwrite=false", b"{}", method="POST")[0] == 409
    assert request(url)[1] == b'{"nodes": []}'
    assert get(studio, "/api/userdata?dir=workflows&recurse=true")[1] == ["a.json"]
    assert get(studio, "/api/userdata?dir=workflows&full_info=true")[1][0]["size"] == 13
    assert get(studio, "/api/v2/userdata?path=workflows")[1][0]["path"] == "workflows/a.json"
    moved = studio.url + "/api/userdata/workflows%2Fa.json/move/workflows%2Fb.json"
    assert request(moved, b"", method="POST")[0] == 200
    assert request(studio.url + "/api/userdata/workflows%2Fb.json", method="DELETE")[0] == 204
    assert get(studio, "/api/userdata?dir=workflows")[1] == []


@pytest.mark.parametrize(
    "path",
    [
        "/api/userdata/..%2F..%2Fetc%2Fpasswd",
        "/api/userdata/%2Fetc%2Fpasswd",
        "/api/userdata?dir=..%2F..",
        "/api/v2/userdata?path=..",
        "/api/view?filename=passwd&subfolder=../../../../etc&type=output",
        "/api/view?filename=..%2F..%2Fuser%2Fcomfy.settings.json&type=output",
        "/api/view?filename=/etc/passwd&type=output",
    ],
)
def test_no_path_leaves_its_folder(studio, path):
    code, body = request(studio.url + path)
    assert code in (400, 403), (code, body)


def test_view_serves_only_output_images(studio):
    assert request(studio.url + "/api/view?filename=a.png&type=input")[0] == 400
    assert request(studio.url + "/api/view?filename=missing.png&type=output")[0] == 404


def test_cross_origin_requests_are_refused(studio, cartpole_prompt):
    prompt, _ = cartpole_prompt()
    evil = {**JSON, "Origin": "http://evil.example"}
    code, body = request(studio.url + "/api/prompt", {"prompt": prompt}, headers=evil)
    assert code == 403 and b"cross-origin" in body
    assert (
        request(studio.url + "/api/settings", headers={"Origin": "http://evil.example"})[0] == 403
    )
    same = {"Origin": studio.url}
    assert request(studio.url + "/api/settings", headers=same)[0] == 200


def test_request_size_is_limited(studio):
    code, _ = request(
        studio.url + "/api/prompt", b"{" + b" " * (17 * 1024 * 1024) + b"}", headers=JSON
    )
    assert code == 413


def test_validation_problems_are_node_errors(studio, cartpole_prompt):
    prompt, _ = cartpole_prompt()
    trainer = next(k for k, v in prompt.items() if v["class_type"] == "PPOTrainerNode")
    prompt[trainer]["inputs"]["dones"] = ["999", 0]  # a broken link
    prompt[trainer]["inputs"]["gamma"] = 1.5
    code, body = request(studio.url + "/api/prompt", {"prompt": prompt}, headers=JSON)
    reply = json.loads(body)
    assert code == 400 and reply["error"]["type"] == "prompt_outputs_failed_validation"
    errors = reply["node_errors"][trainer]
    assert errors["class_type"] == "PPOTrainerNode"
    assert {e["type"] for e in errors["errors"]} == {"custom_validation_failed"}
    assert {e["extra_info"]["ppokit_code"] for e in errors["errors"]} == {
        "dangling_link",
        "out_of_range",
    }
    assert {e["extra_info"]["input_name"] for e in errors["errors"]} == {"dones", "gamma"}


def test_only_declared_node_types_run(studio):
    prompt = {"1": {"class_type": "subprocess.Popen", "inputs": {"args": "touch /tmp/x"}}}
    code, body = request(studio.url + "/api/prompt", {"prompt": prompt}, headers=JSON)
    assert code == 400
    error = json.loads(body)["node_errors"]["1"]["errors"][0]
    assert error["extra_info"]["ppokit_code"] == "unknown_node_type"
    assert request(studio.url + "/api/prompt", b"not json", headers=JSON)[0] == 400


async def run_to_end(studio, body: dict, interrupt_at: int | None = None) -> list[dict]:
    """Queue `body` on a websocket client; the events until the run ends."""
    events = []
    ends = ("execution_success", "execution_error", "execution_interrupted")
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(studio.url + "/api/ws?clientId=test") as ws,
    ):
        async with session.post(studio.url + "/api/prompt", json=body) as r:
            assert r.status == 200, await r.text()
            prompt_id = (await r.json())["prompt_id"]
        async for msg in ws:
            event = json.loads(msg.data)
            events.append(event)
            data = event["data"]
            if event["type"] == "progress" and data["value"] == interrupt_at:
                await session.post(studio.url + "/api/interrupt", json={})
            if data.get("prompt_id") == prompt_id and event["type"] in ends:
                return events
    return events


def test_a_queued_workflow_runs_as_a_graph_run(studio, cartpole_prompt):
    prompt, workflow = cartpole_prompt(total_steps=96)
    body = {
        "prompt": prompt,
        "client_id": "test",
        "extra_data": {"extra_pnginfo": {"workflow": workflow}},
    }
    events = asyncio.run(run_to_end(studio, body))
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "execution_success", events[-3:]
    trainer = next(k for k, v in prompt.items() if v["class_type"] == "PPOTrainerNode")
    progress = [e["data"] for e in events if e["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [
        (i, 3, trainer) for i in (1, 2, 3)
    ]
    outputs = {e["data"]["node"]: e["data"]["output"] for e in events if e["type"] == "executed"}
    evaluate = next(k for k, v in prompt.items() if v["class_type"] == "EvaluateNode")
    assert outputs[evaluate]["ppokit_eval"][0]["episodes"] == 2
    image = outputs[trainer]["images"][0]
    code, png = request(
        f"{studio.url}/api/view?filename={image['filename']}&subfolder={image['subfolder']}&type=output"
    )
    assert code == 200 and png[:4] == b"\x89PNG"
    prompt_id = events[-1]["data"]["prompt_id"]
    entry = get(studio, f"/api/history/{prompt_id}")[1][prompt_id]
    assert entry["status"]["completed"] and entry["outputs"][evaluate]["text"][0].startswith(
        "eval (2 episodes)"
    )
    run = studio.tmp / "runs" / image["subfolder"]
    assert {"config.yaml", "metrics.csv", "eval.json", "checkpoints"} <= {
        p.name for p in run.iterdir()
    }
    assert get(studio, "/api/jobs?status=completed")[1]["jobs"][0]["id"] == prompt_id


def test_interrupt_stops_after_the_update_with_a_checkpoint(studio, cartpole_prompt):
    prompt, workflow = cartpole_prompt(total_steps=32 * 2000)
    body = {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": workflow}}}
    events = asyncio.run(run_to_end(studio, body, interrupt_at=2))
    assert events[-1]["type"] == "execution_interrupted"
    runs = sorted((studio.tmp / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    assert (runs[-1] / "checkpoints" / "latest.pt").is_file()


def test_a_saved_workflow_runs_unchanged_with_graph_run(studio, examples_dir, tmp_path):
    """The template, saved through userdata as the editor saves it, reads back as the native
    graph (same params) and `ppokit graph run` trains it."""
    _, workflow = get(studio, "/api/workflow_templates/ppokit/cartpole_ppo.json")
    url = studio.url + "/api/userdata/workflows%2Fcartpole.json"
    assert request(url, json.dumps(workflow).encode(), method="POST")[0] == 200
    saved = studio.tmp / "user" / "workflows" / "cartpole.json"
    native, imported = load_graph(examples_dir / "cartpole_ppo.json"), load_graph(saved)
    assert imported.settings["seed"] == native.settings["seed"]
    r1, _ = check(native)
    r2, issues = check(imported)
    assert issues == []
    assert {imported.nodes[k].meta["title"]: n.params for k, n in r2.nodes.items()} == {
        k: n.params for k, n in r1.nodes.items()
    }
    sets = ["env.num_envs=2", "trainer.horizon_length=16", "trainer.epochs=2"]
    sets += ["trainer.minibatch_size=16", "trainer.total_steps=32", "eval.episodes=1"]
    ids = {nd.meta["title"]: k for k, nd in imported.nodes.items()}
    args = [a for s in sets for a in ("--set", f"{ids[s.split('.')[0]]}.{s.split('.', 1)[1]}")]
    proc = subprocess.run(
        [sys.executable, "-m", "ppokit", "graph", "run", str(saved), *args, "--out", "out", "--quiet"],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "2 updates, 64 steps" not in proc.stdout and "1 updates, 32 steps" in proc.stdout
