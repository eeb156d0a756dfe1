"""Recurrent cores (GRU, LSTM) over [T, B, F] sequences, with per-step resets of the state.

The state is one flat tensor per env, ``[B, state_size]`` (GRU: the L layers' h; LSTM: h then
c), so the rollout buffer stores it like any other per-step field and the update starts each
sequence from the stored row. ``resets[t, b]`` zeroes env b's state before step t: where an
episode ended at t - 1, the next one must not see it. Between calls, whoever carries the state
(the rollout, evaluation, a loaded or exported policy) zeroes it with `reset_states`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

MemoryKind = Literal["gru", "lstm"]


def reset_states(state: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
    """The memory state [B, S] with the rows of the envs whose episode ended ([B] bool) zeroed:
    a new episode starts from a zero state. The one reset of a carried state (TorchScript-able:
    exported recurrent policies call it too)."""
    return state.masked_fill(ended.unsqueeze(-1), 0.0)


class Memory(nn.Module):
    """A GRU or LSTM of `layers` x `hidden` units, orthogonal weights and zero biases."""

    def __init__(self, kind: MemoryKind, input_dim: int, hidden: int, layers: int = 1) -> None:
        super().__init__()
        if kind not in ("gru", "lstm"):
            raise ValueError(f"memory kind must be gru or lstm, got {kind!r}")
        self.kind = kind
        self.hidden = hidden
        self.layers = layers
        rnn_type = nn.GRU if kind == "gru" else nn.LSTM
        self.rnn = rnn_type(input_dim, hidden, layers)
        for name, param in self.rnn.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(param, 1.0)
            else:
                nn.init.zeros_(param)
        self.out_dim = hidden
        self.state_size = layers * hidden * (2 if kind == "lstm" else 1)

    def initial_state(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.zeros(batch, self.state_size, device=device)

    # --- flat state <-> the RNN's own layout ---------------------------------------------------
    def _unpack(self, state: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        batch = state.shape[0]

        def layered(x: torch.Tensor) -> torch.Tensor:  # [B, L*H] -> [L, B, H]
            return x.reshape(batch, self.layers, self.hidden).transpose(0, 1).contiguous()

        if self.kind == "lstm":
            h, c = state.chunk(2, dim=-1)
            return layered(h), layered(c)
        return layered(state)

    def _pack(self, state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        def flat(x: torch.Tensor) -> torch.Tensor:  # [L, B, H] -> [B, L*H]
            return x.transpose(0, 1).reshape(x.shape[1], -1)

        if isinstance(state, tuple):
            return torch.cat([flat(state[0]), flat(state[1])], dim=-1)
        return flat(state)

    @staticmethod
    def _mask(
        state: torch.Tensor | tuple[torch.Tensor, torch.Tensor], keep: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        keep = keep.view(1, -1, 1)
        if isinstance(state, tuple):
            return state[0] * keep, state[1] * keep
        return state * keep

    # --- forward --------------------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, state: torch.Tensor, resets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run over `x` [T, B, F] from `state` [B, state_size]; `resets` [T, B] (bool) zeroes an
        env's state before that step. Returns (outputs [T, B, hidden], state after step T-1)."""
        h = self._unpack(state)
        if resets is None:
            out, h = self.rnn(x, h)
            return out, self._pack(h)
        # The RNN runs uninterrupted between the steps where some env resets; one host read
        # finds those steps. Exact: the state is zeroed precisely where and when asked.
        boundaries = torch.nonzero(resets.any(dim=1)).flatten().tolist()
        outs = []
        start = 0
        for t in [*boundaries, x.shape[0]]:
            if t > start:
                out, h = self.rnn(x[start:t], h)
                outs.append(out)
            if t < x.shape[0]:
                h = self._mask(h, (~resets[t]).to(x.dtype))
            start = t
        return torch.cat(outs) if len(outs) > 1 else outs[0], self._pack(h)
