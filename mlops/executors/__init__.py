"""Who trains the folds and trials: this process (``local``, the default) or Ray tasks (``--executor ray``).

``backtest`` runs several configs' folds, ``trials`` runs a study's trials in parallel, ``cluster`` starts or
joins Ray and sizes tasks, and ``tasks`` is what runs inside a task. Ray is imported only for ``ray``.
"""
