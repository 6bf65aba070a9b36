"""CLI commands of the speech study (train, study); registered by sw.cli."""

from __future__ import annotations


def add_commands(sub) -> None:
    """Add the study's subcommands to the ``deltarnn`` parser."""
