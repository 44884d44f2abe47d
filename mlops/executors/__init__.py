"""Who trains the folds: this process (``local``, the default) or Ray tasks (``--executor ray``).

The runner walks every fold and writes its folder; an executor only trains: ``local`` in this process,
``on_ray`` as Ray tasks submitted up front (``cluster`` starts or joins Ray and sizes the tasks, ``tasks`` is
what runs inside one). Ray is imported only for ``ray``. Tuning's parallel trials use the same cluster code.
"""

from __future__ import annotations

from mlops.executors.options import ExecutorOptions

__all__ = ["ExecutorOptions", "executor_for"]


def executor_for(options: ExecutorOptions | None):
    """The executor ``options`` names: a ``LocalExecutor`` or a ``RayExecutor``."""
    from mlops.executors.local import LocalExecutor

    if options is None or options.kind == "local":
        return LocalExecutor()
    from mlops.executors.on_ray import RayExecutor

    return RayExecutor(options)
