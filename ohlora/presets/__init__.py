"""Model presets (DESIGN.md §7): a name that resolves to a ready config file.

- `mini`: offline from PyPI wheels, prepared once into <models>/mini (ohlora.presets.mini); `mini-fast`: its reply
  on the 0.5B too (faster turns, weaker replies); `mini-few-shot`: the bare bases on few-shot prompts.
- `tiny`: tiny models built and briefly fine-tuned in-process, for tests and quick looks.
- `ohlora-v2`: the original's weights, installed by `ohlora models pull` (<models>/ohlora-v2.toml).
"""

from __future__ import annotations

import os
from pathlib import Path

from ohlora.errors import ConfigError

PRESETS = ("mini", "mini-fast", "mini-few-shot", "tiny", "ohlora-v2")
DEFAULT_PRESET = "mini"


def default_models_dir() -> Path:
    """Where prepared and downloaded models live: $OHLORA_MODELS, else ~/.local/share/ohlora/models."""
    return Path(os.environ.get("OHLORA_MODELS") or Path.home() / ".local" / "share" / "ohlora" / "models")


def tiny_config(root: Path) -> Path:
    """Tiny models fine-tuned once on a few examples; recall always on so the memory path is exercised."""
    config = root / "ohlora.toml"
    if not config.exists():
        from ohlora.tiny import build_tiny_preset

        print("preparing the tiny preset (once, ~15 s) ...", flush=True)
        preset = build_tiny_preset(root, trained=True)
        config.write_text(preset.config_toml().replace("threshold = 0.9", "threshold = -1.0"))
    return config


def preset_config(name: str, models: Path | None = None) -> Path:
    """The config file of a preset, preparing the preset first if it is not ready yet."""
    models = models or default_models_dir()
    if name in ("mini", "mini-fast", "mini-few-shot"):
        from ohlora.presets.mini import SHIPPED_ADAPTERS, PresetMissing, adapters_shipped, prepare_mini

        preset = prepare_mini(models / "mini")
        if name != "mini-few-shot" and not adapters_shipped():
            raise PresetMissing(f"the mini preset's adapters are missing from {', '.join(map(str, SHIPPED_ADAPTERS))}: "
                                "reinstall ohlora-services (or use --preset mini-few-shot)")
        return {"mini": preset.config, "mini-fast": preset.fast_config}.get(name, preset.few_shot_config)
    if name == "tiny":
        return tiny_config(models / "tiny")
    if name == "ohlora-v2":
        config = models / "ohlora-v2.toml"
        if not config.exists():
            raise ConfigError(f"the ohlora-v2 preset is not installed in {models}: run `ohlora models pull --dir {models}` "
                              "(needs internet and about 6 GB)")
        return config
    raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
