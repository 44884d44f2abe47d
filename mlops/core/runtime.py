"""Process-wide settings that must be in place before torch (and its OpenMP runtime) is first imported."""

from __future__ import annotations

import os

#: OpenMP threads that wait at a barrier sleep instead of spinning. On a machine shared with other busy
#: processes, a spinning thread holds a core its team mate needs, and a fixed-size torch thread team then
#: runs several times slower (measured in docs/benchmarks.md, "Threads under load"); idle, it costs nothing.
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def configure_openmp() -> None:
    """Set the OpenMP defaults above unless the user set them; without effect once torch is loaded."""
    for name, value in OPENMP_DEFAULTS.items():
        os.environ.setdefault(name, value)
