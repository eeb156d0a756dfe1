"""Data-parallel training on torch.distributed: launch detection, set-up and teardown, and the few
collectives PPO needs.

`torchrun --nproc_per_node=K -m ppokit train ...` starts K copies of the same command; each is a
rank with its own envs. `setup()` reads torchrun's variables (WORLD_SIZE, RANK, LOCAL_RANK,
MASTER_ADDR/PORT) and joins the process group: NCCL when the device is CUDA (each rank on
cuda:LOCAL_RANK), gloo on the CPU. Without them it returns `LocalSync`, whose methods do nothing,
so a single process runs exactly the code and numbers it always ran.

What the ranks share, and how (docs/distributed.md):
- parameters and buffers start as rank 0's (`broadcast_module`);
- every minibatch, the flat gradient and the loss terms (approx KL among them) are averaged in ONE
  all-reduce (`average_flat`, `average_gradients`), so every rank takes the same optimizer step
  and the KL early stop and adaptive LR decide the same;
- running statistics (observation normalizer, reward scaler) merge every rank's batch moments in
  rank order (`gather_moments`), so every rank holds bit-identical statistics;
- batch-wide quantities (advantage mean/std, explained variance) use global moments (`moments`);
- rank 0 alone writes logs and checkpoints; `gather_object` brings every rank's RNG state to it.

Collectives run only at points every rank reaches in the same order (the update, and one stop
check per update), so no rank waits on a collective the others never enter.
"""

from __future__ import annotations

import atexit
import functools
import gc
import os
import warnings
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import nn

from ppokit.errors import ConfigError, PPOKitError

F = TypeVar("F", bound=Callable[..., Any])


class DistributedError(PPOKitError):
    """A collective failed: another rank stopped or crashed (its own error is in its output)."""


def launch_world_size() -> int:
    """The world size torchrun (or another launcher setting WORLD_SIZE) started us with; 1 if none."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


class LocalSync:
    """A single process: nothing to share. Every method is the identity or a no-op."""

    distributed = False
    rank = 0
    local_rank = 0
    world_size = 1

    @property
    def is_main(self) -> bool:
        """Whether this rank writes logs, progress and checkpoints (rank 0)."""
        return self.rank == 0

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every rank's parameters and buffers rank 0's."""

    def average_flat(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Element-wise mean over ranks of 1-D tensors, in one all-reduce."""
        return tensors

    def average_gradients(self, params: list[torch.Tensor], extra: torch.Tensor) -> torch.Tensor:
        """Average the parameters' .grad (in place) and `extra` over ranks; returns `extra`."""
        return extra

    def gather_moments(
        self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Every rank's (mean, population var, count), in rank order."""
        return [(mean, var, count)]

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, population var, count) in float64 over dim 0 of `x` on every rank together."""
        x = x.double()
        count = torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)
        return x.mean(0), x.var(0, unbiased=False), count

    def gather_envs(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[T, N, ...] tensors -> [T, N * world_size, ...]: every rank's envs, in rank order."""
        return tensors

    def any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank."""
        return flag

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (picklable objects)."""
        return obj

    def gather_object(self, obj: Any) -> list[Any] | None:
        """Every rank's `obj` in rank order on rank 0; None on the other ranks."""
        return [obj]

    def check_same(self, obj: Any, what: str) -> None:
        """Raise ConfigError on every rank unless `obj` (e.g. the config) is equal on all ranks."""


def _collective(fn: F) -> F:
    """A failed collective becomes a DistributedError that names the likely cause."""

    @functools.wraps(fn)
    def wrapper(self: DistributedSync, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except RuntimeError as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DistributedError(
                f"rank {self.rank}: {fn.__name__} across {self.world_size} ranks failed; another"
                f" rank stopped or crashed (its error is shown in its output): {first_line}"
            ) from e

    return wrapper  # type: ignore[return-value]


class DistributedSync(LocalSync):
    """The collectives over the default torch.distributed process group."""

    distributed = True

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.device = device
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", self.rank))

    @_collective
    def broadcast_module(self, module: nn.Module) -> None:
        tensors = [t.data for t in (*module.parameters(), *module.buffers())]
        # One broadcast per dtype, in the same order on every rank (the module's, never a set's).
        for dtype in dict.fromkeys(t.dtype for t in tensors):
            group = [t for t in tensors if t.dtype == dtype]
            flat = torch.cat([t.reshape(-1) for t in group])
            self.dist.broadcast(flat, src=0)
            for t, chunk in zip(group, flat.split([t.numel() for t in group])):
                t.copy_(chunk.view_as(t))

    @_collective
    def average_flat(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        flat = torch.cat([t.reshape(-1) for t in tensors])
        self.dist.all_reduce(flat)  # SUM: gloo has no AVG
        flat.div_(self.world_size)
        return tuple(
            c.view_as(t) for c, t in zip(flat.split([t.numel() for t in tensors]), tensors)
        )

    def average_gradients(self, params: list[torch.Tensor], extra: torch.Tensor) -> torch.Tensor:
        grads = []
        for p in params:
            if p.grad is None:  # a parameter this minibatch did not reach still takes part
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        *averaged, extra = self.average_flat(*grads, extra)
        for g, a in zip(grads, averaged):
            g.copy_(a)
        return extra

    @_collective
    def gather_moments(
        self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        packed = torch.cat(
            [count.reshape(1).double(), mean.reshape(-1).double(), var.reshape(-1).double()]
        )
        parts = [torch.empty_like(packed) for _ in range(self.world_size)]
        self.dist.all_gather(parts, packed)
        d = mean.numel()
        return [
            (
                p[1 : 1 + d].view_as(mean).to(mean.dtype),
                p[1 + d :].view_as(var).to(var.dtype),
                p[0].to(count.dtype),
            )
            for p in parts
        ]

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return merge_moments(self.gather_moments(*super().moments(x)))

    @_collective
    def gather_envs(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # One all_gather for all of them: float64 holds float32 and bool values exactly.
        packed = torch.stack([t.double() for t in tensors])
        parts = [torch.empty_like(packed) for _ in range(self.world_size)]
        self.dist.all_gather(parts, packed)
        merged = torch.cat(parts, dim=2)  # [K, T, N * W, ...]
        return tuple(m.to(t.dtype) for m, t in zip(merged, tensors))

    @_collective
    def any(self, flag: bool) -> bool:
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    @_collective
    def broadcast_object(self, obj: Any) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    @_collective
    def gather_object(self, obj: Any) -> list[Any] | None:
        out = [None] * self.world_size if self.rank == 0 else None
        self.dist.gather_object(obj, out, dst=0)
        return out

    @_collective
    def check_same(self, obj: Any, what: str) -> None:
        every = [None] * self.world_size
        self.dist.all_gather_object(every, obj)
        differ = [r for r, o in enumerate(every) if o != every[0]]
        if differ:
            detail = ""
            if isinstance(obj, dict):
                keys = _differing_keys(every[0], every[differ[0]])
                detail = f" (first differences: {', '.join(keys[:5])})"
            raise ConfigError(
                f"ranks {differ} were started with a {what} different from rank 0's{detail};"
                " launch every rank with the same command"
            )


def _differing_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b), key=str):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += _differing_keys(x, y, f"{prefix}{k}.")
        elif x != y:
            keys.append(f"{prefix}{k}")
    return keys


def merge_moments(
    parts: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, population var, count) of the union of sample sets given by theirs, merged in
    order with the exact parallel formula `RunningMeanStd.merge` uses."""
    it = iter(parts)
    mean, var, count = next(it)
    for m, v, c in it:
        total = count + c
        delta = m - mean
        m2 = var * count + v * c + delta.square() * (count * c / total)
        mean = mean + delta * (c / total)
        var = m2 / total
        count = total
    return mean, var, count


def setup(device: torch.device) -> tuple[LocalSync, torch.device]:
    """Join the process group torchrun describes and return (sync, this rank's device).

    Not launched by torchrun (WORLD_SIZE unset or 1): (LocalSync(), device). A process group
    someone already initialised (a test, a user's script) is used as it is and left open.
    With CUDA each rank uses cuda:LOCAL_RANK (the backend is NCCL); on the CPU the backend is gloo.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() == 1:
            return LocalSync(), device
        return DistributedSync(_rank_device(device)), _rank_device(device)
    if launch_world_size() <= 1:
        return LocalSync(), device
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    device = _rank_device(device)
    # Import before the group exists: torch.distributed.nn.functional binds `group.WORLD` as
    # default arguments when it is first imported (torch._dynamo imports it lazily, mid-run),
    # and a group held that way outlives destroy_process_group; its gloo threads then release
    # their last work during interpreter exit, which aborts the process (exit -6).
    import torch.distributed.nn.functional  # noqa: F401

    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    atexit.register(teardown)  # leave the group on any exit (an exiting member would abort)
    return DistributedSync(device), device


def _rank_device(device: torch.device) -> torch.device:
    """cuda -> cuda:LOCAL_RANK; an explicit other index is an error (two ranks on one GPU)."""
    if device.type != "cuda":
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.index is not None and device.index != local_rank:
        raise ConfigError(
            f"device {str(device)!r}: under torchrun every rank uses cuda:LOCAL_RANK (this is"
            f" local rank {local_rank}); use --device cuda or auto, and CUDA_VISIBLE_DEVICES to"
            " choose the GPUs"
        )
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"local rank {local_rank} needs cuda:{local_rank} but only"
            f" {torch.cuda.device_count()} GPU(s) are visible; lower --nproc_per_node"
        )
    return torch.device("cuda", local_rank)


def teardown() -> None:
    """Leave the process group (idempotent). Warns when the group outlives it: something still
    holds it, so its worker threads live on into interpreter exit, where they can abort it."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    group = weakref.ref(dist.group.WORLD)
    dist.destroy_process_group()
    gc.collect()
    if group() is not None:
        warnings.warn(
            "the torch.distributed process group outlived destroy_process_group (another"
            " reference holds it); its threads may abort the process at exit",
            RuntimeWarning,
            stacklevel=2,
        )
