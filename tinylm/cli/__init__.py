"""The ``tinylm`` command (``main``); the only place that parses arguments."""

from tinylm.cli.main import main

__all__ = ["main"]
