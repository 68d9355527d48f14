"""Configuration: the settings schema, a typed TOML reader, and the loader that validates a
file and the environment into `Settings` once, at start-up. Pure.
"""

from gateway.config.loader import load_database, load_settings
from gateway.config.members import header_name, member_name, patterns, with_limits
from gateway.config.reload import reloaded
from gateway.config.schema import (
    MEMBER_LIMITS,
    POSTGRESQL_SCHEMES,
    SECTIONS,
    ConfigError,
    Database,
    Demo,
    MemberSettings,
    MeteringSettings,
    Settings,
    shown_location,
)

__all__ = [
    "MEMBER_LIMITS",
    "POSTGRESQL_SCHEMES",
    "SECTIONS",
    "ConfigError",
    "Database",
    "Demo",
    "MemberSettings",
    "MeteringSettings",
    "Settings",
    "header_name",
    "load_database",
    "load_settings",
    "member_name",
    "patterns",
    "reloaded",
    "shown_location",
    "with_limits",
]
