"""Configuration: the settings schema, a typed TOML reader, and the loader that validates a
file and the environment into `Settings` once, at start-up. Pure.
"""

from gateway.config.loader import load_metering, load_settings
from gateway.config.schema import (
    SECTIONS,
    ConfigError,
    Demo,
    MemberSettings,
    MeteringSettings,
    Settings,
)

__all__ = [
    "SECTIONS",
    "ConfigError",
    "Demo",
    "MemberSettings",
    "MeteringSettings",
    "Settings",
    "load_metering",
    "load_settings",
]
