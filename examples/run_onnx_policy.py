"""Run a policy exported by `ppokit export --format onnx` with only onnxruntime and gymnasium.

    python examples/run_onnx_policy.py runs/halfcheetah_s1_.../policy.onnx --episodes 3

The ONNX graph takes raw observations (float32, a batch dimension first; a Dict observation is
one input per key) and returns the deterministic action already scaled and clipped to the env's
bounds (int64 indices for discrete actions): observation normalization and action
post-processing are inside. A recurrent policy also takes its hidden state ("hidden", zeros at an
episode's start) and returns the next one ("hidden_out"). The file's metadata ("ppokit" entry,
JSON) names the env it was trained on and lists the inputs.
"""

import argparse
import json

import gymnasium as gym
import onnxruntime as ort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("policy", help="path of the exported .onnx file")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--env", help="env id (default: the one in the file's metadata)")
    parser.add_argument("--max-episode-steps", type=int, help="override the env's time limit")
    args = parser.parse_args()

    session = ort.InferenceSession(args.policy, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["ppokit"])
    dtypes = {i["name"]: i["dtype"] for i in meta["inputs"]}  # float32, uint8 for images
    env_cfg = meta["env"]  # the training run's env settings
    kwargs = dict(env_cfg["kwargs"])
    steps_limit = args.max_episode_steps or env_cfg["max_episode_steps"]
    if steps_limit is not None:
        kwargs["max_episode_steps"] = steps_limit
    env = gym.make(args.env or meta["env_id"], **kwargs)
    outputs = ["action", "hidden_out"] if meta["recurrent"] else ["action"]

    for episode in range(args.episodes):
        obs, _ = env.reset(seed=episode)
        hidden = None
        total, steps, done = 0.0, 0, False
        while not done:
            # A batch of one raw observation in (one array per key for Dict observations).
            arrays = obs if isinstance(obs, dict) else {"obs": obs}
            feed = {k: v[None].astype(dtypes[k]) for k, v in arrays.items()}
            if meta["recurrent"]:
                if hidden is None:  # zeros [1, state_size] at the episode's start
                    first = next(iter(feed.values()))
                    hidden = (first.reshape(1, -1)[:, :1] * 0).astype("float32")
                    hidden = hidden.repeat(meta["state_size"], axis=1)
                feed["hidden"] = hidden
            action, *rest = session.run(outputs, feed)
            if rest:
                hidden = rest[0]  # carried to the next step
            obs, reward, terminated, truncated, _ = env.step(action[0])
            total += float(reward)
            steps += 1
            done = terminated or truncated
        print(f"episode {episode}: return {total:.1f}, length {steps}")
    env.close()


if __name__ == "__main__":
    main()
