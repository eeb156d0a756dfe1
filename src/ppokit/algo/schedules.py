"""Learning-rate schedules: constant, linear to 0, cosine to a floor, and KL-adaptive."""

from __future__ import annotations

import math

from ppokit.config import AlgoConfig


class LRSchedule:
    """Gives the learning rate for each update (time-based) or after each KL measurement (adaptive).

    The adaptive rule divides the LR by `lr_factor` when approx KL > 2 x target and multiplies it
    when KL < target / 2, clamped to [min_lr, max_lr]: above ~1e-3 PPO tends to unlearn.
    """

    def __init__(self, cfg: AlgoConfig, total_updates: int) -> None:
        self.kind = cfg.lr_schedule
        self.initial = cfg.lr
        self.floor = cfg.lr * cfg.lr_floor
        self.total_updates = max(1, total_updates)
        # The schedule's progress (0 -> 1) runs linearly from start_progress at update
        # start_update to 1 at total_updates: (0, 0) unless a resume changed the run's length.
        self.start_update, self.start_progress = 0, 0.0
        self.target_kl = cfg.target_kl
        self.factor = cfg.lr_factor
        self.min_lr, self.max_lr = cfg.min_lr, cfg.max_lr
        self.lr = cfg.lr

    @property
    def adaptive(self) -> bool:
        return self.kind == "adaptive"

    def progress(self, update: int) -> float:
        """How far through the schedule update number `update` is, from 0 to 1."""
        left = (update - self.start_update) / (self.total_updates - self.start_update)
        return min(self.start_progress + (1.0 - self.start_progress) * left, 1.0)

    def extend(self, done: int, total_updates: int) -> None:
        """A resumed run now `total_updates` long, `done` updates in: what is left of the
        schedule is stretched (or squeezed) over the updates left, so the LR goes on from the
        value the next update would have had (from the last update's value when the schedule had
        ended) without a jump, and reaches the schedule's end at the new end."""
        total_updates = max(1, total_updates)
        if total_updates == self.total_updates or done >= total_updates:
            return
        self.start_progress = self.progress(min(done, self.total_updates - 1))
        self.start_update, self.total_updates = done, total_updates

    def at_update(self, update: int) -> float:
        """LR for update number `update` (0-based) of a time-based schedule."""
        progress = self.progress(update)
        if self.kind == "linear":
            self.lr = self.initial * (1.0 - progress)
        elif self.kind == "cosine":
            self.lr = self.floor + (self.initial - self.floor) * 0.5 * (
                1.0 + math.cos(math.pi * progress)
            )
        return self.lr

    def after_kl(self, kl: float) -> float:
        """Adapt the LR to a measured approx KL (adaptive schedule only)."""
        assert self.target_kl is not None
        if kl > 2.0 * self.target_kl:
            self.lr = max(self.min_lr, self.lr / self.factor)
        elif kl < 0.5 * self.target_kl:
            self.lr = min(self.max_lr, self.lr * self.factor)
        return self.lr

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "lr": self.lr,
            "total_updates": self.total_updates,
            "start_update": self.start_update,
            "start_progress": self.start_progress,
        }

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.total_updates = int(state["total_updates"])
        self.start_update = int(state.get("start_update", 0))
        self.start_progress = float(state.get("start_progress", 0.0))
