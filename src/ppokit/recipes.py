"""The recipe `ppokit train --env ID` uses when no preset or config file is given.

A recipe is the settings of a shipped preset applied to another env of the same family: MuJoCo
(Box actions) take the MuJoCo presets' recipe, discrete actions CartPole's, other Box actions
(classic control, Box2D, your own) Pendulum's, Dict observations the multi-modal locomotion
recipe's, and ppokit's batched torch tasks the massively-parallel one. The env-specific keys of
the preset (its env id and kwargs, per-key encoders and observation groups) are not carried over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ppokit import config as C


@dataclass(frozen=True)
class Recipe:
    name: str
    preset: str
    why: str

    def announce(self, env_id: str) -> str:
        return (
            f"recipe: {self.name} (the settings of preset {self.preset!r}) for {env_id}, {self.why};"
            " choose another with --preset NAME or --config FILE, see them all with --print-config"
        )


MUJOCO = Recipe("mujoco", "halfcheetah", "a MuJoCo env with Box actions")
DISCRETE = Recipe("discrete", "cartpole", "an env with discrete actions")
BOX = Recipe("classic-control", "pendulum", "an env with Box actions")
MULTI_MODAL = Recipe("multi-modal", "ant-locomotion", "an env with Dict observations")
BATCHED = Recipe("batched", "pointmass-4096", "a batched torch task")


def pick_recipe(env_id: str, kwargs: dict | None = None) -> Recipe:
    """The recipe for `env_id` by its family and spaces (the env is built once to read them)."""
    import gymnasium as gym

    from ppokit.envs import check_env_id, is_torch_env

    if is_torch_env(env_id):
        return BATCHED
    check_env_id(env_id)
    env = gym.make(env_id, **(kwargs or {}))
    try:
        obs_space, action_space = env.observation_space, env.action_space
    finally:
        env.close()
    entry_point = str(gym.spec(env_id.rpartition(":")[2] or env_id).entry_point)
    if isinstance(obs_space, gym.spaces.Dict):
        return MULTI_MODAL
    if isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        return DISCRETE
    if "mujoco" in entry_point:
        return MUJOCO
    return BOX


# Keys of a preset that describe its own env rather than the recipe.
ENV_SPECIFIC = {
    "env": ("id", "kwargs", "max_episode_steps"),
    "policy": ("encoders", "actor_keys", "critic_keys"),
}


def recipe_config(recipe: Recipe, env_id: str) -> C.TrainConfig:
    """The recipe's preset with its env-specific keys back at their defaults and `env_id` set."""
    cfg = C.load_preset(recipe.preset)
    defaults = C.TrainConfig()
    for section, keys in ENV_SPECIFIC.items():
        values = {k: getattr(getattr(defaults, section), k) for k in keys}
        setattr(cfg, section, replace(getattr(cfg, section), **values))
    cfg.env.id = env_id
    return cfg
