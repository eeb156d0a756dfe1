"""ppokit: PPO for continuous control and robotics.

The public names are imported on first use (PEP 562), so `import ppokit` and the CLI's parser
load no torch: `ppokit --help` and argument errors answer at once. `from ppokit import Trainer`
and `ppokit.Trainer` work as usual.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from ppokit.version import __version__ as __version__

# public name -> module that defines it
_LAZY = {
    "PPO": "ppokit.algo.ppo",
    "ActorCritic": "ppokit.nn.actor_critic",
    "Policy": "ppokit.policy",
    "TrainConfig": "ppokit.config",
    "Trainer": "ppokit.trainer",
    "compute_gae": "ppokit.algo.gae",
    "load_config": "ppokit.config",
    "load_policy": "ppokit.policy",
}

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

if _typing.TYPE_CHECKING:  # static tools see the real objects
    from ppokit.algo.gae import compute_gae
    from ppokit.algo.ppo import PPO
    from ppokit.config import TrainConfig, load_config
    from ppokit.nn.actor_critic import ActorCritic
    from ppokit.policy import Policy, load_policy
    from ppokit.trainer import Trainer


def train(cfg: TrainConfig, **kwargs: _typing.Any):
    """Train with `cfg` and return the TrainResult: `ppokit.train(load_config("pendulum"))`."""
    from ppokit.trainer import Trainer

    return Trainer(cfg, **kwargs).train()


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ppokit' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
