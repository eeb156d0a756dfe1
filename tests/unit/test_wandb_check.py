"""logging.check_wandb: where W&B credentials are looked for, without starting a run."""

from __future__ import annotations

import pytest

from ppokit.config import LogConfig
from ppokit.errors import ConfigError
from ppokit.logging import check_wandb

pytest.importorskip("wandb")
KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, the shape of a W&B key


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """An empty HOME and no W&B credential variables."""
    for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / ".config" / "wandb"))
    return tmp_path


def test_online_without_credentials_raises(no_credentials):
    with pytest.raises(ConfigError, match="--log.wandb_mode offline"):
        check_wandb(LogConfig(wandb=True, wandb_mode="online"))


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_offline_and_disabled_need_no_key(no_credentials, mode):
    check_wandb(LogConfig(wandb=True, wandb_mode=mode))


def test_wandb_off_checks_nothing(no_credentials):
    check_wandb(LogConfig(wandb=False, wandb_mode="online"))


def test_environment_key_is_found(no_credentials, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    check_wandb(LogConfig(wandb=True, wandb_mode="online"))


def test_netrc_key_from_wandb_login_is_found(no_credentials):
    """`wandb login` writes the key to ~/.netrc for the W&B server."""
    netrc = no_credentials / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {KEY}\n")
    netrc.chmod(0o600)
    check_wandb(LogConfig(wandb=True, wandb_mode="online"))
