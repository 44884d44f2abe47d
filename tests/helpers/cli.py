"""Driving the real CLI from tests: the one way a test makes an experiment's splits."""

from __future__ import annotations

from pathlib import Path

#: The column options of the ``small_csv`` fixture's file (the original design's column names).
REVIEW_COLUMNS = ("--text-column", "Sentence", "--target-column", "Sentiment")


def generate_splits(cli, experiment_id: str, input_file: Path | str, *extra: str, folds: int | str | None = None,
                    seed: int | str | None = None, columns: tuple[str, ...] = (), **options):
    """``cli generate-splits`` through the ``cli`` fixture; ``extra`` and ``options`` pass through unchanged."""
    args = ["generate-splits", "--experiment-id", experiment_id, "--input-file", str(input_file), *columns]
    if folds is not None:
        args += ["--cv-folds", str(folds)]
    if seed is not None:
        args += ["--seed", str(seed)]
    return cli(*args, *extra, **options)


def assert_clean_failure(result, *needles: str, artifacts: Path | None = None) -> None:
    """A refused command: non-zero exit, one "Error:" line naming each of ``needles``, no traceback, and (with
    ``artifacts``) no half-made experiment left behind."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "Error:" in result.output
    for needle in needles:
        assert needle in result.output, f"{needle!r} not in:\n{result.output}"
    if artifacts is not None:
        experiments = artifacts / "experiments"
        leftovers = list(experiments.iterdir()) if experiments.exists() else []
        assert leftovers == [], f"partial experiment left behind: {leftovers}"
