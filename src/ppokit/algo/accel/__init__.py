"""Accelerators: faster implementations of steps of PPO's reference path, chosen in one place.

The reference is the eager torch code a reader follows: `ActorCritic.act` for the rollout's act
step, `PPO._reference_step` (backward, clip, Adam) around `ppo_loss` in float32 for the update.
An accelerator computes the same step faster where the reference's overhead dominates:

| step | accelerator | runs when | equality test |
| --- | --- | --- | --- |
| act | NumPy (`numpy_act.NumpyAct`) | `algo.act_backend numpy`, or `auto` with <= 16 envs, for a flat MLP policy on the CPU | tests/unit/test_numpy_act.py |
| act | `ActorCritic.act` through torch.compile (`compiled.compiled_act`) | `algo.compile_act` on the torch act path, no memory | tests/unit/test_accel.py |
| update | the minibatch step as compiled graphs (`compiled.CompiledUpdate`) | `algo.compile`, no memory | tests/unit/test_compiled_step.py |
| update | `ppo_loss` under bfloat16 autocast (`precision.py`) | `precision bf16` | tests/unit/test_precision.py |

`choose_paths(cfg, model, device)` is the one place that decides, and says why: `Paths.describe()`
is the line the Trainer prints at start-up (`PPO.paths` holds it for the node runtime and user
loops). `Accelerators` builds what was chosen for a PPO. A compiled accelerator whose first call
fails (compilation errors surface there) warns once and hands over to the reference for the
rest of the run (`_Fallback`): there is no other fallback.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ppokit.algo.accel.compiled import CompiledUpdate, compile_available, compiled_act
from ppokit.algo.accel.numpy_act import NumpyAct
from ppokit.algo.accel.precision import autocast, check_precision
from ppokit.algo.loss import ppo_loss
from ppokit.config import TrainConfig
from ppokit.errors import ConfigError
from ppokit.nn.actor_critic import ActorCritic

if TYPE_CHECKING:
    from ppokit.algo.ppo import PPO

# `algo.act_backend auto` acts in NumPy up to this many envs: beyond, torch's per-op overhead is
# amortised and its kernels win (measured: benchmarks/RESULTS.md, "Batched torch envs").
NUMPY_MAX_ENVS = 16


@dataclass(frozen=True)
class Paths:
    """What runs for each step, and why."""

    act: str  # "torch" (the reference), "numpy" or "compiled"
    act_why: str
    update: str  # "eager" (the reference) or "compiled"
    update_why: str
    precision: str  # "fp32" (the reference) or "bf16"

    def describe(self) -> str:
        """One line, e.g. `update: compiled (algo.compile); act: numpy (8 envs <= 16, flat MLP
        on the CPU)`."""
        update = f"{self.update} ({self.update_why})"
        if self.precision != "fp32":
            update += f", {self.precision} autocast (precision {self.precision})"
        return f"update: {update}; act: {self.act} ({self.act_why})"


def choose_paths(cfg: TrainConfig, model: ActorCritic, device: torch.device) -> Paths:
    """The one selection point: which accelerators run `cfg`'s PPO on `model` and `device`.

    Raises ConfigError where the config asks for what cannot run (the NumPy act step on a model
    it does not implement, a compiled update of a recurrent policy, bf16 on a device without
    it); an unavailable compiler is a warning and the reference runs.
    """
    a, n = cfg.algo, cfg.env.num_envs
    check_precision(cfg.precision, device)
    no_numpy = NumpyAct.unsupported(model)
    if a.act_backend == "numpy" and no_numpy:
        raise ConfigError(
            "algo.act_backend numpy runs flat MLP policies (Box observations, no memory,"
            f" tanh/relu/elu, Gaussian or Categorical actions) on the CPU, not this one"
            f" ({no_numpy}); use auto or torch"
        )
    if a.act_backend == "numpy":
        act, act_why = "numpy", "algo.act_backend numpy"
    elif a.act_backend == "auto" and not no_numpy and n <= NUMPY_MAX_ENVS:
        act, act_why = "numpy", f"{n} envs <= {NUMPY_MAX_ENVS}, flat MLP on the CPU"
    elif a.act_backend == "torch":
        act, act_why = "torch", "algo.act_backend torch"
    else:
        act, act_why = "torch", no_numpy or f"{n} envs > {NUMPY_MAX_ENVS}"
    if a.compile_act and act == "torch":
        act, act_why = _compiled_or_reference("algo.compile_act", device, act, act_why, model)
    update, update_why = "eager", "the reference"
    if a.compile and model.recurrent:
        raise ConfigError(
            "algo.compile does not support recurrent policies; use --algo.compile false"
        )
    if a.compile:
        update, update_why = _compiled_or_reference("algo.compile", device, update, "", model)
    return Paths(act, act_why, update, update_why, cfg.precision)


def _compiled_or_reference(
    flag: str, device: torch.device, reference: str, why: str, model: ActorCritic
) -> tuple[str, str]:
    """("compiled", flag), or the reference and why when `flag` cannot compile here."""
    missing = "not for recurrent policies" if model.recurrent else compile_available(device)[1]
    if not missing:
        return "compiled", flag
    if not model.recurrent:
        warnings.warn(f"{flag}: {missing}; running eagerly", stacklevel=3)
    return reference, f"{why}; {flag}: {missing}" if why else f"{flag}: {missing}"


class Accelerators:
    """The accelerators `paths` chose, built for `ppo`: `act` replaces the rollout's
    `ActorCritic.act` and `update` the minibatch step (None: the reference runs); `autocast()`
    is the precision the loss runs in."""

    def __init__(self, paths: Paths, ppo: PPO) -> None:
        self.paths = paths
        # The context the update's loss runs in: bf16 autocast, or nothing (fp32).
        self.autocast: Callable[[], contextlib.AbstractContextManager] = (
            contextlib.nullcontext
            if paths.precision == "fp32"
            else functools.partial(autocast, paths.precision, ppo.device)
        )
        self.act: Callable[..., Any] | None = None
        if paths.act == "numpy":
            self.act = NumpyAct(ppo.acting_model, ppo.buffer)
        elif paths.act == "compiled":
            self.act = _Fallback(
                compiled_act(ppo.acting_model), ppo.acting_model.act, "algo.compile_act", self
            )
        self.update: Callable[..., Any] | None = None
        if paths.update == "compiled":
            self._compiled = CompiledUpdate(ppo, self.loss)
            self.update = _Fallback(self._compiled, ppo._reference_step, "algo.compile", self)

    def loss(self, model: ActorCritic, mb: Any, **kwargs: Any) -> Any:
        """`ppo_loss` in the configured precision (what a compiled update differentiates)."""
        with self.autocast():
            return ppo_loss(model, mb, **kwargs)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict:
        if self.update is not None:  # the compiled step shares one Adam step counter
            return self._compiled.compiled.optimizer_state_dict()
        return optimizer.state_dict()

    def optimizer_loaded(self) -> None:
        """After optimizer.load_state_dict: the compiled step re-bases the state on its tensors."""
        if self.update is not None:
            self._compiled.compiled.refresh()

    def fell_back(self, fallback: _Fallback) -> None:
        """A compiled accelerator failed on its first call: the reference runs from now on."""
        if fallback is self.update:
            self._compiled.compiled.release()
            self.update = None
        else:
            self.act = None


class _Fallback:
    """Calls `fast`; if its first call raises (compilation errors surface there, before anything
    changed), warns once, tells `owner`, and calls `reference` instead, now and from then on."""

    def __init__(
        self, fast: Callable[..., Any], reference: Callable[..., Any], flag: str, owner: Any
    ) -> None:
        self.fast, self.reference, self.flag, self.owner = fast, reference, flag, owner
        self.called = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.called:
            return self.fast(*args, **kwargs)
        try:
            out = self.fast(*args, **kwargs)
        except Exception as e:  # torch.compile raises many types
            warnings.warn(
                f"{self.flag}: compilation failed ({type(e).__name__}: {e}); running eagerly",
                stacklevel=3,
            )
            self.owner.fell_back(self)
            return self.reference(*args, **kwargs)
        self.called = True
        return out
