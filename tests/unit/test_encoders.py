"""Per-key encoders for dict observations: chosen from the space or the config, CNN layouts,
one-line errors; and the per-key observation normalizer (images scaled, vectors normalized)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.errors import ConfigError
from ppokit.nn.encoders import CNN, Identity, MultiModalEncoder, VectorMLP
from ppokit.nn.normalization import DictObservationNormalizer, ImageScaler, ObservationNormalizer

SPACE = gym.spaces.Dict(
    {
        "proprio": gym.spaces.Box(-np.inf, np.inf, (7,), np.float32),
        "scan": gym.spaces.Box(-np.inf, np.inf, (3, 4), np.float32),  # a 2-D grid: a vector
        "rgb": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8),  # channels last
        "depth": gym.spaces.Box(0.0, 5.0, (1, 12, 10), np.float32),  # channels first
    }
)


def test_encoders_are_chosen_from_the_space():
    enc = MultiModalEncoder(SPACE, ["depth", "proprio", "rgb", "scan"], {}, "elu")
    assert isinstance(enc.encoders["proprio"], VectorMLP)
    assert isinstance(enc.encoders["scan"], VectorMLP)
    assert isinstance(enc.encoders["rgb"], CNN) and enc.encoders["rgb"].channels_last
    assert isinstance(enc.encoders["depth"], CNN) and not enc.encoders["depth"].channels_last
    assert enc.out_dim == 4 * 64
    obs = {
        k: torch.as_tensor(np.stack([s.sample() for _ in range(5)])).float()
        for k, s in SPACE.spaces.items()
    }
    assert enc(obs).shape == (5, 4 * 64)


def test_config_overrides_per_key_and_output_order():
    specs = {
        "proprio": {"type": "identity"},
        "scan": {"type": "mlp", "hidden": [32, 8]},
        "depth": {
            "type": "cnn",
            "channels": [4, 8],
            "kernels": [3, 3],
            "strides": [1, 2],
            "out": 5,
        },
    }
    enc = MultiModalEncoder(SPACE, ["proprio", "scan", "depth"], specs, "tanh")
    assert isinstance(enc.encoders["proprio"], Identity)
    assert enc.out_dim == 7 + 8 + 5
    obs = {
        "proprio": torch.arange(7.0).expand(2, 7),
        "scan": torch.randn(2, 3, 4),
        "depth": torch.rand(2, 1, 12, 10),
    }
    out = enc(obs)
    assert out.shape == (2, 20)
    torch.testing.assert_close(out[:, :7], obs["proprio"])  # identity first, in key order


def test_channels_last_images_equal_channels_first():
    torch.manual_seed(0)
    last = CNN((8, 8, 3), [4], [3], [1], 6, "relu", channels_last=True)
    first = CNN((3, 8, 8), [4], [3], [1], 6, "relu")
    first.load_state_dict(last.state_dict())
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(last(x.permute(0, 2, 3, 1)), first(x))


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ({"proprio": {"type": "cnn"}}, "cannot read"),
        ({"rgb": {"type": "mlp"}}, "image of shape .* use a cnn"),
        ({"proprio": {"type": "transformer"}}, "identity, mlp or cnn"),
        ({"proprio": {"type": "mlp", "hiden": [3]}}, r"unknown field\(s\) \['hiden'\]"),
        ({"depth": {"type": "cnn", "kernels": [13, 3], "strides": [1, 1]}}, "too small"),
        ({"depth": {"type": "cnn", "channels": [4], "kernels": [3, 3]}}, "one entry per layer"),
    ],
)
def test_bad_encoder_specs_are_one_line_config_errors(specs, message):
    with pytest.raises(ConfigError, match=message) as info:
        MultiModalEncoder(SPACE, list(specs), specs, "tanh")
    assert "\n" not in str(info.value)


def test_dict_normalizer_scales_images_and_normalizes_vectors():
    norm = DictObservationNormalizer(SPACE, clip=5.0)
    assert isinstance(norm.parts["rgb"], ImageScaler)
    assert isinstance(norm.parts["depth"], ImageScaler)
    assert isinstance(norm.parts["scan"], ObservationNormalizer)
    data = {
        "proprio": torch.randn(200, 7) * 3 + 2,
        "scan": torch.randn(200, 3, 4) - 1,
        "rgb": torch.randint(0, 256, (200, 16, 16, 3), dtype=torch.uint8),
        "depth": torch.rand(200, 1, 12, 10) * 5,
    }
    norm.update(data)
    out = norm(data)
    assert out["proprio"].shape == (200, 7) and out["scan"].shape == (200, 12)
    torch.testing.assert_close(out["proprio"].mean(0), torch.zeros(7), atol=1e-4, rtol=0)
    torch.testing.assert_close(
        out["proprio"].std(0, unbiased=False), torch.ones(7), atol=1e-3, rtol=0
    )
    torch.testing.assert_close(out["rgb"], data["rgb"].float() / 255)
    torch.testing.assert_close(out["depth"], data["depth"] / 5)
    assert out["rgb"].dtype == torch.float32
    # Statistics are buffers of the model (saved in checkpoints); images have none.
    keys = norm.state_dict().keys()
    assert "parts.proprio.rms.mean" in keys and not any(k.startswith("parts.rgb") for k in keys)
