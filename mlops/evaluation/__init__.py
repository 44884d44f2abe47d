"""Reading results back: ``comparison`` (list-experiments, compare-models) and ``report`` (cli report)."""
