"""A graph queued from `ppokit studio` against `ppokit graph run` on the same graph (CartPole).

Both train examples/graphs/cartpole_ppo.json unchanged (99,840 steps, then a 20-episode
deterministic evaluation): `graph run` as a command, the studio through its API as the editor
queues it (the template's API-format prompt, POST /api/prompt, events on /ws), its worker drawing
the learning curve every 5 s as it does by default. Reported per run: the training SPS of the
run's last metrics.csv row (`charts/SPS`: steps / time since the run started), the wall time
(command start to exit; POST to `execution_success`) and the evaluation return (eval.json). The
two alternate; `OMP_NUM_THREADS=1`.

Usage:
  python benchmarks/studio_vs_graph_run.py [--repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRAPH = REPO / "examples" / "graphs" / "cartpole_ppo.json"
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "studio"))


def last_sps(run: Path) -> float:
    rows = [r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("charts/SPS")]
    return float(rows[-1]["charts/SPS"])


def graph_run(tmp: Path, env: dict) -> dict:
    out = tmp / f"graph_{time.time_ns()}"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ppokit", "graph", "run", str(GRAPH), "--out", str(out), "--quiet"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    return {
        "sps": last_sps(out),
        "wall_s": wall,
        "eval": json.loads((out / "eval.json").read_text())["mean_return"],
    }


def studio_run(studio, prompt: dict, workflow: dict) -> dict:
    import aiohttp

    async def run() -> tuple[float, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(studio.url + "/ws?clientId=bench") as ws,
        ):
            t0 = time.perf_counter()
            body = {"prompt": prompt, "extra_data": {"extra_pnginfo": {"workflow": workflow}}}
            async with session.post(studio.url + "/api/prompt", json=body) as r:
                prompt_id = (await r.json())["prompt_id"]
            async for msg in ws:
                event = json.loads(msg.data)
                if (
                    event["data"].get("prompt_id") == prompt_id
                    and event["type"].startswith("execution_")
                    and event["type"] != "execution_start"
                ):
                    assert event["type"] == "execution_success", event
                    return time.perf_counter() - t0, prompt_id
        raise RuntimeError("websocket closed")

    wall, prompt_id = asyncio.run(run())
    from studio_util import request

    entry = json.loads(request(f"{studio.url}/api/history/{prompt_id}")[1])[prompt_id]
    run_dir = Path(entry["ppokit"]["run_dir"])
    return {
        "sps": last_sps(run_dir),
        "wall_s": wall,
        "eval": json.loads((run_dir / "eval.json").read_text())["mean_return"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"
    from studio_util import StudioProcess, api_prompt, request

    from ppokit_testutil import cli_env

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = cli_env(tmp)
        studio = StudioProcess(tmp)
        try:
            workflow = json.loads(
                request(studio.url + "/api/workflow_templates/ppokit/cartpole_ppo.json")[1]
            )
            prompt = api_prompt(workflow, json.loads(request(studio.url + "/api/object_info")[1]))
            results: dict[str, list[dict]] = {"graph run": [], "studio": []}
            for i in range(args.repeats):
                for name in ("graph run", "studio") if i % 2 == 0 else ("studio", "graph run"):
                    load = os.getloadavg()[0]
                    r = (
                        graph_run(tmp, env)
                        if name == "graph run"
                        else studio_run(studio, prompt, workflow)
                    )
                    r["load1"] = load
                    results[name].append(r)
                    print(
                        f"{name}: {r['sps']:.0f} SPS, {r['wall_s']:.1f} s wall, eval {r['eval']:.1f} (load {load:.1f})",
                        flush=True,
                    )
        finally:
            studio.stop()
    med = {k: statistics.median(r["sps"] for r in v) for k, v in results.items()}
    wall = {k: statistics.median(r["wall_s"] for r in v) for k, v in results.items()}
    print(
        f"studio / graph run: SPS {med['studio'] / med['graph run']:.3f}, wall {wall['studio'] / wall['graph run']:.3f}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps({"runs": results, "median_sps": med, "median_wall_s": wall}, indent=2)
        )


if __name__ == "__main__":
    main()
