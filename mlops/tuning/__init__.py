"""Hyperparameter search (``cli tune``): an Optuna study over a config's ``search_space``.

``trial`` scores one trial on rows the hold-out never enters, ``study`` owns the study's storage, sampler and
pruner, and ``service`` runs the search and writes the best config.
"""
