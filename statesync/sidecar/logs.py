"""structlog set-up: JSON lines when stdout is not a terminal, key=value on a terminal.

A redaction step drops the value of any key that names a secret, so a token or a
key that slips into an event never reaches the output.
"""
from __future__ import annotations

import logging
import sys

import structlog

_SECRET_WORDS = ("token", "password", "secret", "private", "key_material", "authorization")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _redact(_logger, _name, event: dict) -> dict:
    for k in list(event):
        if any(w in k.lower() for w in _SECRET_WORDS):
            event[k] = "[redacted]"
    return event


def configure(fmt: str = "auto", level: str = "info", stream=None) -> None:
    """Configure structlog for the process: ``fmt`` is auto, json or console."""
    stream = stream or sys.stdout
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer = structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
