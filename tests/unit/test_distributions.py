"""Action distributions against torch.distributions and empirical sampling frequencies."""

from __future__ import annotations

import math

import pytest
import torch
from torch import distributions as D

from ppokit.nn.distributions import Categorical, DiagGaussian, MultiCategorical


def _gaussian(log_std: list[float], lo: float = -5.0, hi: float = 2.0) -> DiagGaussian:
    dist = DiagGaussian(len(log_std), torch.ones(len(log_std)), lo, hi)
    with torch.no_grad():
        dist.log_std.copy_(torch.tensor(log_std))
    return dist


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


# chi-square critical values at p = 0.001 (df = k - 1); the tests are seeded, this only guards
# against a test that is right by luck.
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47}


def test_diag_gaussian_log_prob_and_entropy_match_torch():
    dist = _gaussian([-1.0, 0.0, 0.7])
    mean = torch.randn(10, 3)
    actions = torch.randn(10, 3) * 2
    ref = D.Normal(mean, torch.tensor([-1.0, 0.0, 0.7]).exp())
    torch.testing.assert_close(dist.log_prob(mean, actions), ref.log_prob(actions).sum(-1))
    entropy = dist.entropy(mean)
    assert entropy.shape == (10,)
    torch.testing.assert_close(entropy, ref.entropy().sum(-1))


def test_diag_gaussian_sample_log_prob_equals_log_prob_of_sample():
    dist = _gaussian([-0.5, 0.3])
    mean = torch.randn(64, 2)
    actions, log_prob = dist.sample(mean)
    torch.testing.assert_close(log_prob, dist.log_prob(mean, actions), rtol=0, atol=1e-5)
    ref = D.Normal(mean, torch.tensor([-0.5, 0.3]).exp())
    torch.testing.assert_close(log_prob, ref.log_prob(actions).sum(-1), rtol=0, atol=1e-5)


def test_diag_gaussian_samples_have_the_right_moments():
    dist = _gaussian([math.log(0.5), math.log(2.0)])
    mean = torch.tensor([1.0, -3.0]).expand(100_000, 2)
    actions, _ = dist.sample(mean)
    torch.testing.assert_close(actions.mean(0), torch.tensor([1.0, -3.0]), rtol=0, atol=0.02)
    torch.testing.assert_close(actions.std(0), torch.tensor([0.5, 2.0]), rtol=0.01, atol=0)


def test_diag_gaussian_log_std_clamp():
    # Initial std below exp(min) is clamped at construction.
    dist = DiagGaussian(2, torch.tensor([1e-4, 1.0]), log_std_min=-2.0, log_std_max=1.0)
    torch.testing.assert_close(dist.log_std.detach(), torch.tensor([-2.0, 0.0]))
    # A learned log-std that drifts outside [min, max] is clamped everywhere it is used.
    with torch.no_grad():
        dist.log_std.copy_(torch.tensor([-9.0, 4.0]))
    clamped = torch.tensor([-2.0, 1.0])
    torch.testing.assert_close(dist.std(), clamped.exp())
    mean = torch.zeros(5, 2)
    actions = torch.randn(5, 2)
    ref = D.Normal(mean, clamped.exp())
    torch.testing.assert_close(dist.log_prob(mean, actions), ref.log_prob(actions).sum(-1))
    torch.testing.assert_close(dist.entropy(mean), ref.entropy().sum(-1))
    samples, sample_log_prob = dist.sample(torch.zeros(50_000, 2))
    torch.testing.assert_close(samples.std(0), clamped.exp(), rtol=0.02, atol=0)
    ref = D.Normal(torch.zeros(2), clamped.exp())
    torch.testing.assert_close(sample_log_prob, ref.log_prob(samples).sum(-1), rtol=0, atol=1e-4)
    assert dist.mode(mean) is mean


def test_categorical_matches_torch():
    dist = Categorical(5)
    logits = torch.randn(20, 5) * 2
    actions = torch.randint(0, 5, (20,))
    ref = D.Categorical(logits=logits)
    torch.testing.assert_close(dist.log_prob(logits, actions), ref.log_prob(actions))
    torch.testing.assert_close(dist.entropy(logits), ref.entropy())
    sampled, log_prob = dist.sample(logits)
    assert sampled.dtype == torch.long and sampled.shape == (20,)
    torch.testing.assert_close(log_prob, ref.log_prob(sampled))
    assert torch.equal(dist.mode(logits), logits.argmax(-1))


def test_categorical_sampling_frequencies():
    probs = torch.tensor([0.05, 0.15, 0.5, 0.25, 0.05])
    logits = probs.log().expand(200_000, 5) + 3.0  # an offset must not matter
    actions, _ = Categorical(5).sample(logits)
    counts = torch.bincount(actions, minlength=5).double()
    assert _chi_square(counts, probs.double()) < CHI2_999[4]


def test_multicategorical_matches_torch():
    nvec = [3, 2, 4]
    dist = MultiCategorical(nvec)
    assert dist.head_dim == 9 and dist.action_shape == (3,)
    logits = torch.randn(16, 9)
    actions = torch.stack([torch.randint(0, n, (16,)) for n in nvec], dim=-1)
    parts = [D.Categorical(logits=chunk) for chunk in torch.split(logits, nvec, dim=-1)]
    expected_lp = sum(p.log_prob(actions[:, i]) for i, p in enumerate(parts))
    expected_ent = sum(p.entropy() for p in parts)
    torch.testing.assert_close(dist.log_prob(logits, actions), expected_lp)
    torch.testing.assert_close(dist.entropy(logits), expected_ent)
    sampled, log_prob = dist.sample(logits)
    assert sampled.shape == (16, 3)
    for i, n in enumerate(nvec):
        assert int(sampled[:, i].min()) >= 0 and int(sampled[:, i].max()) < n
    torch.testing.assert_close(log_prob, dist.log_prob(logits, sampled))
    expected_mode = torch.stack([c.argmax(-1) for c in torch.split(logits, nvec, -1)], -1)
    assert torch.equal(dist.mode(logits), expected_mode)


def test_multicategorical_sampling_frequencies():
    nvec = [2, 3]
    probs = [torch.tensor([0.3, 0.7]), torch.tensor([0.6, 0.1, 0.3])]
    logits = torch.cat([p.log() for p in probs]).expand(100_000, 5)
    actions, _ = MultiCategorical(nvec).sample(logits)
    for i, (n, p) in enumerate(zip(nvec, probs)):
        counts = torch.bincount(actions[:, i], minlength=n).double()
        assert _chi_square(counts, p.double()) < CHI2_999[n - 1]
    # Components are independent: the joint frequency of (1, 0) is 0.7 * 0.6.
    joint = ((actions[:, 0] == 1) & (actions[:, 1] == 0)).double().mean().item()
    assert joint == pytest.approx(0.42, abs=0.006)
