"""Experiment tracking (``--track mlflow|tensorboard``): one parent run per command, one nested run per fold.

The runner talks to a ``Tracking`` session; backends (``mlflow_backend``, ``tensorboard_backend``) are
imported only when asked for. Per-epoch figures arrive through a ``TrainingCallback`` that the runner
adds to ``FitContext.callbacks``. A failing backend (an unreachable server, a full disk) is reported
once as a warning and switched off: tracking never fails a training.
"""
