"""Run a policy exported by `ppokit export --format onnx` with only onnxruntime and gymnasium.

    python examples/run_onnx_policy.py runs/halfcheetah_s1_.../policy.onnx --episodes 3

The ONNX graph takes raw observations [batch, obs_dim] (float32) and returns the deterministic
action already scaled and clipped to the env's bounds (int64 indices for discrete actions):
observation normalization and action post-processing are inside, so nothing else is needed.
The file's metadata ("ppokit" entry, JSON) names the env it was trained on.
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
    args = parser.parse_args()

    session = ort.InferenceSession(args.policy, providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["ppokit"])
    env_cfg = meta["env"]  # the training run's env settings
    kwargs = dict(env_cfg["kwargs"])
    if env_cfg["max_episode_steps"] is not None:
        kwargs["max_episode_steps"] = env_cfg["max_episode_steps"]
    env = gym.make(args.env or meta["env_id"], **kwargs)

    for episode in range(args.episodes):
        obs, _ = env.reset(seed=episode)
        total, steps, done = 0.0, 0, False
        while not done:
            # A batch of one raw observation in, a batch of one env action out.
            (action,) = session.run(["action"], {"obs": obs[None].astype("float32")})
            obs, reward, terminated, truncated, _ = env.step(action[0])
            total += float(reward)
            steps += 1
            done = terminated or truncated
        print(f"episode {episode}: return {total:.1f}, length {steps}")
    env.close()


if __name__ == "__main__":
    main()
