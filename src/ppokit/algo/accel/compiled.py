"""Accelerators by torch.compile: the update's minibatch step (`CompiledUpdate`, algo.compile) and
the rollout's act step (`compiled_act`, algo.compile_act).

The minibatch step (loss, gradients, gradient clipping, Adam) as compiled graphs:

On small networks a minibatch step is almost all per-op overhead: autograd bookkeeping, one
dispatcher call per op, the optimizer's Python loop, and (once compiled) guard checks on every
input tensor. So the parameters are re-based onto ONE flat tensor (each nn.Parameter becomes a
view of it), the Adam moments onto two more, and one graph computes the gradient of the flat
vector, clips it and applies Adam in place: about ten graph inputs instead of sixty, one fused
optimizer kernel instead of one per parameter.

The loss is `algo.loss.ppo_loss` itself, called through `torch.func`, so there is no second PPO
loss. The optimizer's per-parameter state entries (`exp_avg`, `exp_avg_sq`, `step`) are views of
the flat state, so `optimizer.state_dict()`, checkpoints and the eager step keep working;
tests/unit/test_compiled_step.py checks `CompiledUpdate` against the reference step
(`PPO._reference_step`: backward, `clip_grad_norm_`, `torch.optim.Adam`/`AdamW`) step for step.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from ppokit.algo.loss import MinibatchReport, UpdateObserver
from ppokit.algo.rollout import Minibatch
from ppokit.nn.actor_critic import ActorCritic, PolicyStep

if TYPE_CHECKING:
    from ppokit.algo.ppo import PPO


def compile_available(device: torch.device) -> tuple[bool, str]:
    """Whether torch.compile can build kernels for `device` here (and why not)."""
    try:
        import torch._dynamo  # noqa: F401
        import torch._inductor  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the install
        return False, f"torch.compile is unavailable ({e})"
    if device.type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return False, "no C++ compiler on PATH (inductor needs one for CPU kernels)"
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            return False, "triton is not installed (inductor needs it for CUDA kernels)"
    cache_per_cpu_capability()
    return True, ""


def cache_per_cpu_capability() -> None:
    """Keep inductor's on-disk cache apart per ATen CPU capability (AVX512, AVX2, DEFAULT).

    torch 2.13's cache key leaves the capability out: CPU kernels compiled under AVX-512 and
    served to a process run with ATEN_CPU_CAPABILITY=avx2 computed NaN losses here
    (tests/unit/test_compiled_step.py with ATEN_CPU_CAPABILITY=avx2 after a plain run). A cache
    directory the user chose (TORCHINDUCTOR_CACHE_DIR) is left as it is; importing torch._dynamo
    writes torch's default there, which is replaced (torch reads the variable at every use).
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    default = os.path.abspath(default_cache_dir())
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen is None or os.path.abspath(chosen) == default:
        capability = torch.backends.cpu.get_cpu_capability().lower()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default}-{capability}"


class _Loss(nn.Module):
    """Wraps the model so that torch.func can call ppo_loss with substituted parameters."""

    def __init__(self, model: nn.Module, loss_fn: Any, loss_kwargs: dict) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.loss_kwargs = loss_kwargs

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        terms = self.loss_fn(self.model, Minibatch(*tensors), **self.loss_kwargs)
        aux = (
            terms.policy_loss,
            terms.value_loss,
            terms.entropy,
            terms.approx_kl,
            terms.clip_fraction,
        )
        return terms.loss, aux


class CompiledStep:
    """Replaces backward + clip_grad_norm_ + optimizer.step for one minibatch.

    `gradients(mb)` returns (flat gradient, loss terms) without changing anything;
    `apply(grad, lr)` clips it and applies Adam in place. `step(mb, lr)` is both in one graph,
    used when no KL check has to see the loss before the parameters change.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Any,
        loss_kwargs: dict,
        max_grad_norm: float,
    ) -> None:
        group = optimizer.param_groups[0]
        if len(optimizer.param_groups) != 1 or group.get("amsgrad") or group.get("maximize"):
            raise ValueError("the compiled step supports a single Adam/AdamW param group")
        self.optimizer = optimizer
        self.loss_module = _Loss(model, loss_fn, loss_kwargs)
        named = [(f"model.{n}", p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shapes = [p.shape for p in self.params]
        self.sizes = [p.numel() for p in self.params]
        self.buffers = {f"model.{n}": b for n, b in model.named_buffers()}
        self.beta1, self.beta2 = group["betas"]
        self.eps = group["eps"]
        self.weight_decay = group["weight_decay"]
        self.decoupled = isinstance(optimizer, torch.optim.AdamW) or bool(
            group.get("decoupled_weight_decay")
        )
        self.max_grad_norm = max_grad_norm
        self.device = self.params[0].device
        self._lr = torch.zeros((), device=self.device)
        self._lr_value: float | None = None
        self.calls = 0
        # One flat parameter vector; every nn.Parameter becomes a view of it.
        self.flat = torch.cat([p.detach().reshape(-1) for p in self.params])
        for p, view in zip(self.params, self._views(self.flat)):
            p.data = view
        self.exp_avg = torch.zeros_like(self.flat)
        self.exp_avg_sq = torch.zeros_like(self.flat)
        self.step_count = torch.zeros((), dtype=torch.float32)
        self.refresh()
        self._gradients = torch.compile(self._gradients_impl, dynamic=False)
        self._apply = torch.compile(self._apply_impl, dynamic=False)
        self._step = torch.compile(self._step_impl, dynamic=False)

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [chunk.view(shape) for chunk, shape in zip(flat.split(self.sizes), self.shapes)]

    def refresh(self) -> None:
        """Re-base the optimizer state onto the flat tensors (after optimizer.load_state_dict)."""
        states = [self.optimizer.state[p] for p in self.params]
        if states[0]:  # loaded or eagerly created state: adopt its values
            self.exp_avg.copy_(torch.cat([s["exp_avg"].reshape(-1) for s in states]))
            self.exp_avg_sq.copy_(torch.cat([s["exp_avg_sq"].reshape(-1) for s in states]))
            self.step_count.copy_(states[0]["step"])
        for s, m, v in zip(states, self._views(self.exp_avg), self._views(self.exp_avg_sq)):
            s["exp_avg"], s["exp_avg_sq"], s["step"] = m, v, self.step_count

    def _lr_tensor(self, lr: float) -> torch.Tensor:
        if lr != self._lr_value:
            self._lr.fill_(lr)
            self._lr_value = lr
        return self._lr

    # --- graph bodies -----------------------------------------------------------------------------
    def _loss_of(self, flat: torch.Tensor, tensors: tuple) -> tuple[torch.Tensor, tuple]:
        params = dict(zip(self.names, self._views(flat)))
        return functional_call(self.loss_module, {**params, **self.buffers}, tensors)

    def _gradients_impl(self, flat: torch.Tensor, tensors: tuple) -> tuple[torch.Tensor, tuple]:
        return grad_and_value(self._loss_of, has_aux=True)(flat, tensors)

    def clip(self, grad: torch.Tensor) -> torch.Tensor:
        """torch.nn.utils.clip_grad_norm_ on the flat gradient (part of the compiled graphs;
        called eagerly only to show observers the gradient the step applies)."""
        if self.max_grad_norm > 0:
            scale = torch.clamp(
                self.max_grad_norm / (torch.linalg.vector_norm(grad) + 1e-6), max=1.0
            )
            grad = grad * scale
        return grad

    def _apply_impl(
        self,
        grad: torch.Tensor,
        lr: torch.Tensor,
        flat: torch.Tensor,
        exp_avg: torch.Tensor,
        exp_avg_sq: torch.Tensor,
        step: torch.Tensor,
    ) -> None:
        # torch.nn.utils.clip_grad_norm_ and torch.optim.Adam(W), on the flat vector.
        grad = self.clip(grad)
        with torch.no_grad():
            step.add_(1)
            if self.weight_decay:
                if self.decoupled:
                    flat.mul_(1 - lr * self.weight_decay)
                else:
                    grad = grad + self.weight_decay * flat
            exp_avg.lerp_(grad, 1 - self.beta1)
            exp_avg_sq.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            bias1 = 1 - self.beta1**step
            bias2 = 1 - self.beta2**step
            denom = (exp_avg_sq.sqrt() / bias2.sqrt()).add_(self.eps)
            flat.sub_(lr / bias1 * exp_avg / denom)

    def _step_impl(
        self,
        tensors: tuple,
        lr: torch.Tensor,
        flat: torch.Tensor,
        exp_avg: torch.Tensor,
        exp_avg_sq: torch.Tensor,
        step: torch.Tensor,
    ) -> tuple:
        grad, (loss, aux) = self._gradients_impl(flat, tensors)
        self._apply_impl(grad, lr, flat, exp_avg, exp_avg_sq, step)
        return loss, aux

    # --- public -----------------------------------------------------------------------------------
    def _state(self) -> tuple[torch.Tensor, ...]:
        return (self.flat, self.exp_avg, self.exp_avg_sq, self.step_count)

    @staticmethod
    def _tensors(mb: Minibatch) -> tuple:
        tensors = (mb.obs, mb.actions, mb.log_probs, mb.values, mb.advantages, mb.returns)
        if mb.weights is not None:  # EMA agent: (states, resets, mask) stay None
            return (*tensors, None, None, None, mb.weights)
        return tensors

    def gradients(self, mb: Minibatch) -> tuple[torch.Tensor, tuple]:
        grad, (_, aux) = self._gradients(self.flat, self._tensors(mb))
        self.calls += 1
        return grad, aux

    def apply(self, grad: torch.Tensor, lr: float) -> None:
        self._apply(grad, self._lr_tensor(lr), *self._state())

    def step(self, mb: Minibatch, lr: float) -> tuple:
        _, aux = self._step(self._tensors(mb), self._lr_tensor(lr), *self._state())
        self.calls += 1
        return aux

    def release(self) -> None:
        """Give every parameter its own Adam step counter again, for the eager optimizer (which
        increments each one) when this step is abandoned."""
        for p in self.params:
            state = self.optimizer.state[p]
            state["step"] = state["step"].clone()

    def optimizer_state_dict(self) -> dict:
        """optimizer.state_dict() with a separate `step` tensor per parameter: a checkpoint must
        not carry the shared counter into an eager optimizer."""
        state = self.optimizer.state_dict()
        state["state"] = {
            key: {**value, "step": value["step"].clone()} if "step" in value else value
            for key, value in state["state"].items()
        }
        return state


class CompiledUpdate:
    """`PPO.minibatch_step` on compiled graphs: the same loss terms, KL decision, all-reduce of
    the gradient across ranks and observers around `CompiledStep`. Without a KL check, ranks or
    observers between the gradient and the parameter update, one graph does both."""

    def __init__(self, ppo: PPO, loss_fn: Callable[..., Any]) -> None:
        self.ppo = ppo
        self.compiled = CompiledStep(
            ppo.model, ppo.optimizer, loss_fn, ppo.loss_kwargs, ppo.algo.max_grad_norm
        )

    def __call__(
        self, mb: Minibatch, check_kl: bool = False, observers: Sequence[UpdateObserver] = ()
    ) -> torch.Tensor | None:
        ppo = self.ppo
        if not (check_kl or ppo.sync.distributed or observers):
            return torch.stack(self.compiled.step(mb, ppo.schedule.lr))
        grads, aux = self.compiled.gradients(mb)
        grads, terms = ppo.sync.average_flat(grads, torch.stack(aux))
        stepping = not check_kl or ppo.kl_allows_step(float(terms[3]))
        if observers:
            norm = torch.linalg.vector_norm(self.compiled.clip(grads)) if stepping else None
            for observe in observers:
                observe(MinibatchReport(mb, terms, norm, stepping))
        if not stepping:
            return None
        self.compiled.apply(grads, ppo.schedule.lr)
        return terms


def compiled_act(model: ActorCritic) -> Callable[..., PolicyStep]:
    """`model.act` as a compiled graph (sampling). The act step is not compiled by default: at
    rollout batch sizes on a CPU the compiled region's call overhead (guards, wrappers) costs
    more than the eager ops it replaces (benchmarks/RESULTS.md)."""
    return torch.compile(model.act, dynamic=False)
