"""The studio tests' server: one `ppokit studio` process per module (its startup is measured)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

pytest.importorskip("aiohttp", reason="ppokit[studio] is not installed")
pytest.importorskip("comfyui_frontend_package", reason="ppokit[studio] is not installed")

from studio_util import StudioProcess, api_prompt, request  # noqa: E402


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    s = StudioProcess(tmp_path_factory.mktemp("studio"), "--curve-every", "0.5")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def object_info(studio):
    return json.loads(request(studio.url + "/api/object_info")[1])


@pytest.fixture
def cartpole_prompt(studio, object_info):
    """Factory: (prompt, workflow) of the CartPole template at `total_steps` (2 envs x 16 steps)."""

    def make(total_steps: int = 64) -> tuple[dict, dict]:
        workflow = json.loads(
            request(studio.url + "/api/workflow_templates/ppokit/cartpole_ppo.json")[1]
        )
        prompt = api_prompt(workflow, object_info)
        for node in prompt.values():
            inputs = node["inputs"]
            if node["class_type"] == "EnvNode":
                inputs["num_envs"] = 2
            elif node["class_type"] == "PPOTrainerNode":
                inputs.update(
                    horizon_length=16, epochs=2, minibatch_size=16, total_steps=total_steps
                )
            elif node["class_type"] == "EvaluateNode":
                inputs["episodes"] = 2
        return prompt, workflow

    return make


@pytest.fixture
def examples_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "examples" / "graphs"
