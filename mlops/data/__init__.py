"""Labelled tables (CSV, TSV, Parquet) and how they are split: the hold-out, the folds, the groups."""
