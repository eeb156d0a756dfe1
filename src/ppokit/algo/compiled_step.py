"""The PPO minibatch step (loss, gradients, gradient clipping, Adam) as torch.compile'd graphs.

On small networks a minibatch step is almost all per-op overhead: autograd bookkeeping, one
dispatcher call per op, the optimizer's Python loop. Compiling the whole step into one graph
removes most of it. The loss is `ppo.ppo_loss` itself, called through `torch.func`, so there is
no second PPO loss; the Adam/AdamW update below works on the optimizer's own state tensors
(`exp_avg`, `exp_avg_sq`, `step`), so eager and compiled steps share checkpoints, and a test
checks it against `torch.optim.Adam` step for step.
"""

from __future__ import annotations

import shutil
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad_and_value

from ppokit.algo.rollout import Minibatch


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
    return True, ""


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

    `gradients(mb)` returns (grads, loss terms) without changing anything; `apply(grads, lr)`
    clips and applies Adam in place. `step(mb, lr)` is both in one graph, used when no KL check
    has to see the loss before the parameters change.
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
        self.names = [f"model.{n}" for n, p in model.named_parameters() if p.requires_grad]
        self.params = [p for p in model.parameters() if p.requires_grad]
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
        self.refresh()
        self._gradients = torch.compile(self._gradients_impl, dynamic=False)
        self._apply = torch.compile(self._apply_impl, dynamic=False)
        self._step = torch.compile(self._step_impl, dynamic=False)

    def refresh(self) -> None:
        """(Re)bind the optimizer state tensors; call after optimizer.load_state_dict."""
        for p in self.params:
            state = self.optimizer.state[p]
            if not state:  # created the way torch.optim.Adam does on its first step
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.optimizer.state[p] for p in self.params]
        self._state = (
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
        )
        # Detached aliases of the parameters: the graphs read them and update them in place.
        self._param_dict = {n: p.detach() for n, p in zip(self.names, self.params)}

    def _lr_tensor(self, lr: float) -> torch.Tensor:
        if lr != self._lr_value:
            self._lr.fill_(lr)
            self._lr_value = lr
        return self._lr

    # --- graph bodies -----------------------------------------------------------------------------
    def _loss_of(self, params: dict, tensors: tuple) -> tuple[torch.Tensor, tuple]:
        return functional_call(self.loss_module, {**params, **self.buffers}, tensors)

    def _gradients_impl(self, params: dict, tensors: tuple) -> tuple[dict, tuple]:
        return grad_and_value(self._loss_of, has_aux=True)(params, tensors)

    def _apply_impl(
        self, grads: list, lr: torch.Tensor, exp_avgs: list, exp_avg_sqs: list, steps: list
    ) -> None:
        if self.max_grad_norm > 0:
            total = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g) for g in grads])
            )
            scale = torch.clamp(self.max_grad_norm / (total + 1e-6), max=1.0)
            grads = [g * scale for g in grads]
        with torch.no_grad():
            for p, g, m, v, step in zip(self.params, grads, exp_avgs, exp_avg_sqs, steps):
                step.add_(1)
                if self.weight_decay:
                    if self.decoupled:
                        p.mul_(1 - lr * self.weight_decay)
                    else:
                        g = g + self.weight_decay * p
                m.lerp_(g, 1 - self.beta1)
                v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
                bias1 = 1 - self.beta1**step
                bias2 = 1 - self.beta2**step
                denom = (v.sqrt() / bias2.sqrt()).add_(self.eps)
                p.sub_(lr / bias1 * m / denom)

    def _step_impl(
        self,
        params: dict,
        tensors: tuple,
        lr: torch.Tensor,
        exp_avgs: list,
        exp_avg_sqs: list,
        steps: list,
    ) -> tuple:
        grads, (loss, aux) = self._gradients_impl(params, tensors)
        self._apply_impl([grads[n] for n in self.names], lr, exp_avgs, exp_avg_sqs, steps)
        return loss, aux

    # --- public -----------------------------------------------------------------------------------
    @staticmethod
    def _tensors(mb: Minibatch) -> tuple:
        return (mb.obs, mb.actions, mb.log_probs, mb.values, mb.advantages, mb.returns)

    def gradients(self, mb: Minibatch) -> tuple[list[torch.Tensor], tuple]:
        grads, (loss, aux) = self._gradients(self._param_dict, self._tensors(mb))
        self.calls += 1
        return [grads[n] for n in self.names], aux

    def apply(self, grads: list[torch.Tensor], lr: float) -> None:
        self._apply(grads, self._lr_tensor(lr), *self._state)

    def step(self, mb: Minibatch, lr: float) -> tuple:
        _, aux = self._step(self._param_dict, self._tensors(mb), self._lr_tensor(lr), *self._state)
        self.calls += 1
        return aux
