"""ppokit: PPO for continuous control and robotics."""

from ppokit.algo.gae import compute_gae
from ppokit.algo.ppo import PPO
from ppokit.config import TrainConfig, load_config
from ppokit.nn.actor_critic import ActorCritic
from ppokit.policy import Policy, load_policy
from ppokit.trainer import Trainer

__version__ = "0.1.0"


def train(cfg: TrainConfig, **kwargs):
    """Train with `cfg` and return the TrainResult: `ppokit.train(load_config("pendulum"))`."""
    return Trainer(cfg, **kwargs).train()


__all__ = [
    "PPO",
    "ActorCritic",
    "Policy",
    "TrainConfig",
    "Trainer",
    "compute_gae",
    "load_config",
    "load_policy",
    "train",
]
