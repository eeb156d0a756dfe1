"""Memory (GRU/LSTM cores): the flat state layout, resets inside a sequence, and equality of the
segmented run with a step-by-step reference."""

from __future__ import annotations

import pytest
import torch

from ppokit.nn.memory import Memory

T, B, F, H = 7, 3, 5, 6


@pytest.fixture(params=["gru", "lstm"])
def kind(request) -> str:
    return request.param


@pytest.mark.parametrize("layers", [1, 2])
def test_state_layout_round_trip_and_sizes(kind, layers):
    mem = Memory(kind, F, H, layers)
    assert mem.out_dim == H
    assert mem.state_size == layers * H * (2 if kind == "lstm" else 1)
    state = torch.randn(B, mem.state_size)
    assert torch.equal(mem._pack(mem._unpack(state)), state)
    out, next_state = mem(torch.randn(T, B, F), state)
    assert out.shape == (T, B, H) and next_state.shape == (B, mem.state_size)
    assert mem.initial_state(4).shape == (4, mem.state_size)


def test_without_resets_it_is_the_plain_rnn(kind):
    mem = Memory(kind, F, H, 2)
    x, state = torch.randn(T, B, F), torch.randn(B, mem.state_size)
    out, next_state = mem(x, state, torch.zeros(T, B, dtype=torch.bool))
    ref_out, ref_state = mem.rnn(x, mem._unpack(state))
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(next_state, mem._pack(ref_state))


def step_by_step(mem: Memory, x, state, resets):
    """Reference: one step at a time, zeroing the state by hand before a reset step."""
    outs = []
    for t in range(x.shape[0]):
        state = state * (~resets[t]).float().unsqueeze(1)
        out, state = mem(x[t : t + 1], state)
        outs.append(out)
    return torch.cat(outs), state


def test_resets_match_the_step_by_step_reference(kind):
    mem = Memory(kind, F, H, 2)
    x, state = torch.randn(T, B, F), torch.randn(B, mem.state_size)
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[0, 1] = resets[2, 0] = resets[2, 2] = resets[5, 1] = True
    out, next_state = mem(x, state, resets)
    ref_out, ref_state = step_by_step(mem, x, state, resets)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(next_state, ref_state, rtol=1e-5, atol=1e-6)


def test_a_reset_makes_later_outputs_independent_of_earlier_inputs(kind):
    mem = Memory(kind, F, H)
    x, state = torch.randn(T, B, F), torch.randn(B, mem.state_size)
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[3, 0] = True  # env 0 starts a new episode at step 3
    out, _ = mem(x, state, resets)
    x2, state2 = x.clone(), state.clone()
    x2[:3] += torch.randn(3, B, F)  # other inputs before the reset
    state2 += 1.0  # and another initial state
    out2, _ = mem(x2, state2, resets)
    torch.testing.assert_close(out2[3:, 0], out[3:, 0], rtol=0, atol=0)  # env 0 after the reset
    assert not torch.allclose(out2[:3, 0], out[:3, 0])  # before it, the inputs mattered
    assert not torch.allclose(out2[3:, 1], out[3:, 1])  # env 1 never reset: it remembers
    # ...and equals a fresh run from a zero state over the steps after the reset.
    fresh, _ = mem(x[3:, :1], torch.zeros(1, mem.state_size))
    torch.testing.assert_close(out[3:, :1], fresh, rtol=1e-6, atol=1e-6)


def test_gradients_flow_through_the_sequence_but_not_across_a_reset(kind):
    mem = Memory(kind, F, H)
    x = torch.randn(T, 1, F, requires_grad=True)
    resets = torch.zeros(T, 1, dtype=torch.bool)
    resets[4] = True
    out, _ = mem(x, torch.zeros(1, mem.state_size), resets)
    out[-1].sum().backward()
    assert x.grad[4:].abs().sum() > 0
    assert torch.equal(x.grad[:4], torch.zeros_like(x.grad[:4]))
