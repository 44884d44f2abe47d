"""Process-wide settings that must be in place before torch (and its OpenMP runtime) is first imported."""

from __future__ import annotations

import os

#: OpenMP threads that wait at a barrier spin for about 1,000 checks, then sleep. OpenMP's own default (a spin
#: of milliseconds) holds a core a team mate needs on a shared machine, and a fixed-size torch team then runs
#: several times slower; sleeping at once (``OMP_WAIT_POLICY=PASSIVE``, the default until 2026-12-07) pays a
#: wake-up at every barrier, about 15% of an encoder's training speed on an idle machine. Measured in
#: docs/benchmarks.md, "Threads under load".
OPENMP_DEFAULTS = {"GOMP_SPINCOUNT": "1000"}
#: Variables that, when the user sets any of them, leave OpenMP's waiting to the user.
OPENMP_USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def openmp_settings() -> dict[str, str]:
    """The OpenMP settings our processes run with: the user's own if any is set, else ``OPENMP_DEFAULTS``."""
    chosen = {name: os.environ[name] for name in OPENMP_USER_SETTINGS if name in os.environ}
    return chosen or dict(OPENMP_DEFAULTS)


def configure_openmp() -> None:
    """Set the OpenMP defaults above unless the user set their own; without effect once torch is loaded."""
    os.environ.update(openmp_settings())
