"""Which executor a command asked for (``--executor``, ``--ray-address``, ``--ray-shared-data``)."""

from __future__ import annotations

from dataclasses import dataclass

from mlops.core.errors import ConfigError

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorOptions:
    kind: str = "local"
    ray_address: str | None = None
    shared_data: bool = False  # ray: workers read the input file by path (shared filesystem), sha256 checked

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ConfigError(f"unknown executor {self.kind!r}; choose one of {', '.join(EXECUTORS)}.")
