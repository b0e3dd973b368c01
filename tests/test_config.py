"""One config file plus OHLORA_* environment overrides; flags win over both."""

from __future__ import annotations

import pytest

from ohlora.config import load_settings
from ohlora.errors import ConfigError
from ohlora.llm.task import Dialect
from ohlora.runtime.device import resolve_device


def test_file_then_env_then_flags(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('[server]\nport = 7000\n[llm]\ndtype = "float32"\n[llm.tasks.pose]\ndialect = "chat"\n')
    monkeypatch.setenv("OHLORA_LLM__DTYPE", "bf16")
    settings = load_settings(path)
    assert settings.server.port == 7000
    assert settings.llm.dtype == "bf16"  # env beats file
    assert settings.llm.dialect_of("pose") is Dialect.CHAT
    assert settings.llm.dialect_of("message") is Dialect.ORIGINAL
    assert load_settings(path, server={"port": 7001}).server.port == 7001


def test_config_path_from_env(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text("[server]\nport = 7100\n")
    monkeypatch.setenv("OHLORA_CONFIG", str(path))
    assert load_settings().server.port == 7100


def test_missing_file_and_bad_values_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 'many'\n")
    with pytest.raises(ConfigError, match="port"):
        load_settings(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("[servr]\nport = 1\n")
    with pytest.raises(ConfigError, match="servr"):
        load_settings(typo)


def test_device_follows_visibility():  # dtype: tests/test_dtype.py
    import torch

    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
            resolve_device("cuda:0")
