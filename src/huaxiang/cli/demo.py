"""CLI commands: demo (being built)."""

import typer


def register(app: typer.Typer) -> None:
    del app
