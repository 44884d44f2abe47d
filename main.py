"""The `cli` entry point; the commands live in ``mlops.cli`` (one module per command group)."""

from __future__ import annotations

from mlops.cli.root import app

__all__ = ["app", "run"]


def run() -> None:
    app()


if __name__ == "__main__":
    run()
