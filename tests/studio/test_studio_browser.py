"""The studio in a real browser: Debian's chromium (`make system-deps`) driven by Playwright
(no browser download: the system's executable). The editor loads, the CartPole template opens
from the templates dialog, Run trains it with a small budget, the progress and the evaluation
return reach the page; a broken link comes back as the node's error. Screenshots are saved in
the test's tmp dir (docs/studio.md shows them)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ppokit.nodes import load_graph
from ppokit.nodes.validate import check

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = os.environ.get("PPOKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no chromium at {CHROMIUM}: `make system-deps EXTRAS=dev` installs Debian's chromium",
        allow_module_level=True,
    )

pytestmark = [pytest.mark.xdist_group("studio"), pytest.mark.slow]
# Where the test copies its screenshots when set (docs/studio.md's images come from here).
SHOTS = os.environ.get("PPOKIT_STUDIO_SHOTS")

BUDGET = """(budget) => {
  for (const n of window.app.graph._nodes)
    for (const [k, v] of Object.entries(budget[n.type] || {}))
      n.widgets.find((w) => w.name === k).value = v;
}"""
LISTEN = """() => {
  window.__events = [];
  for (const t of ["progress", "executed", "execution_success", "execution_error"])
    window.app.api.addEventListener(t, (e) => window.__events.push({type: t, detail: e.detail}));
}"""


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, studio):
    page = browser.new_page(viewport={"width": 1500, "height": 880})
    page.goto(studio.url)
    page.wait_for_selector("canvas", timeout=60_000)
    page.wait_for_function("window.app && window.app.graph && window.app.api", timeout=60_000)
    page.evaluate(LISTEN)
    page.evaluate("window.app.extensionManager.setting.set('Comfy.Minimap.Visible', false)")
    yield page
    page.close()


def resolved(graph) -> dict:
    """{title or id: (type, params with defaults, links by title)} of a valid graph."""
    r, issues = check(graph)
    assert issues == []
    name = {k: (nd.meta.get("title") or k) for k, nd in graph.nodes.items()}
    return {
        name[k]: (n.type, n.params, {i: f"{name[v.node]}.{v.port}" for i, v in r.links[k].items()})
        for k, n in r.nodes.items()
    }


def open_template(page, name: str) -> None:
    """Through the templates dialog (it opens on a first visit; else from the sidebar)."""
    card = page.get_by_text(name, exact=True)
    if not card.is_visible():
        page.keyboard.press("Escape")
        page.evaluate("window.app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    card.click(timeout=30_000)
    page.wait_for_function("window.app.graph._nodes.length === 8", timeout=30_000)


def shot(page, path: Path, zoom: float = 0.6) -> None:
    """The whole graph (the templates' layout is 6 columns wide) at a zoom where text shows."""
    page.evaluate(
        "(z) => { const c = window.app.canvas; c.ds.scale = z; c.ds.offset = [110, 100];"
        " c.setDirty(true, true); }",
        zoom,
    )
    page.wait_for_timeout(400)
    page.screenshot(path=str(path))
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(SHOTS) / path.name)


def test_template_runs_from_the_editor_and_shows_progress_and_eval(page, tmp_path, examples_dir):
    open_template(page, "cartpole_ppo")
    # What the editor saves (its workflow JSON) and queues (its API prompt) read back as the
    # native graph: same params, same links (`ppokit graph run` runs the saved file).
    saved = page.evaluate("async () => { const p = await window.app.graphToPrompt(); return p; }")
    native = resolved(load_graph(examples_dir / "cartpole_ppo.json"))
    workflow_path = tmp_path / "saved_by_the_editor.json"
    workflow_path.write_text(json.dumps(saved["workflow"]))
    assert resolved(load_graph(workflow_path)) == native
    assert resolved(load_graph(saved["output"], "prompt")) == native
    budget = {
        "EnvNode": {"num_envs": 2},
        "PPOTrainerNode": {
            "horizon_length": 16,
            "epochs": 2,
            "minibatch_size": 16,
            "total_steps": 320,
        },
        "EvaluateNode": {"episodes": 2},
    }
    page.evaluate(BUDGET, budget)
    page.get_by_role("button", name="Run", exact=True).first.click()
    page.wait_for_function(
        "window.__events.some(e => e.type === 'execution_success' || e.type === 'execution_error')",
        timeout=120_000,
    )
    events = page.evaluate("window.__events")
    assert events[-1]["type"] == "execution_success", events[-1]
    progress = [e["detail"] for e in events if e["type"] == "progress"]
    assert [p["value"] for p in progress] == list(range(1, 11)) and progress[-1]["max"] == 10
    result = page.evaluate(
        """() => Object.fromEntries(window.app.graph._nodes.map(n =>
            [n.type, n.widgets?.find(w => w.name === 'result')?.value ?? null]))"""
    )
    assert result["EvaluateNode"].startswith("eval (2 episodes): return ")
    assert result["PPOTrainerNode"].startswith("10 updates, 320 steps")
    outputs = page.evaluate("JSON.stringify(window.app.nodeOutputs)")
    trainer_out = next(o for o in json.loads(outputs).values() if o.get("images"))
    assert trainer_out["images"][0]["filename"].startswith("curve_")
    page.wait_for_timeout(500)  # the curve image loads
    shot(page, tmp_path / "studio_run.png")
    # The trainer node's foot: its result line and the learning curve (an image output).
    page.evaluate(
        """() => {
          const c = window.app.canvas, z = 0.9;
          const t = window.app.graph._nodes.find(n => n.type === 'PPOTrainerNode');
          c.ds.scale = z;
          c.ds.offset = [-t.pos[0] + 500, -(t.pos[1] + t.size[1]) + 840 / z];
          c.setDirty(true, true);
        }"""
    )
    page.wait_for_timeout(400)
    page.screenshot(path=str(tmp_path / "studio_curve.png"))
    if SHOTS:
        shutil.copy(tmp_path / "studio_curve.png", Path(SHOTS) / "studio_curve.png")


def test_a_broken_link_outlines_the_node_with_our_message(page, tmp_path):
    open_template(page, "cartpole_ppo")
    errors = page.evaluate(
        """async () => {
          const t = window.app.graph._nodes.find(n => n.type === 'PPOTrainerNode');
          t.disconnectInput(t.findInputSlot('dones'));
          try { await window.app.queuePrompt(0); } catch (e) {}
          for (let i = 0; i < 50 && !window.app.lastNodeErrors; i++)
            await new Promise(r => setTimeout(r, 100));
          return window.app.lastNodeErrors;
        }"""
    )
    ((trainer, entry),) = errors.items()
    assert entry["class_type"] == "PPOTrainerNode"
    assert entry["errors"][0]["message"] == "required input 'dones' (DONES) is not linked"
    page.wait_for_timeout(300)
    shot(page, tmp_path / "studio_error.png")
