"""The CA guard's settings type and trigger names, as the guard's modules name them.

The ``guard.*`` settings are declared in ``schema.SCHEMA`` like every other, their parsers
live in ``parsing_icinga`` and their cross-checks in ``config``: all below this package, so
that ``config`` never imports it (the guard imports ``config``, and a package circle would
follow). This module only names them here.
"""
from __future__ import annotations

from ..schema import TRIGGERS, GuardSettings

DEFAULTS = GuardSettings()

__all__ = ["DEFAULTS", "TRIGGERS", "GuardSettings"]
