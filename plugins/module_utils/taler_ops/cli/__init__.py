"""The ``taler-ops`` command line: one module per sub-command."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
