"""Subcommands of the treason CLI, one module each."""
