"""``generate``: synthetic labelled text from a causal LM, filtered, resumable, with a report.

Files in ``output_dir`` for ``name``: ``NAME.csv`` (text,label) and ``NAME.meta.json`` (request,
model, prompt format, report) at the end; while running, accepted rows are appended per batch to
``NAME.partial.csv`` and the counters to ``NAME.state.json``, so an interrupted run started again
with the same arguments resumes where it stopped (``force`` starts over).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

from mlops.augment.synthetic.examples import DEFAULT_LABELS, builtin_examples, read_labelled_csv, seed_file_examples
from mlops.augment.synthetic.request import ISO_639_1, GenerationProgress, GenerationReport, GenerationRequest
from mlops.augment.synthetic.run import GenerationRun, OutputPaths
from mlops.core.errors import ConfigError, DataError, ExperimentError
from mlops.core.io import check_plain_name, check_writable_directory

logger = logging.getLogger(__name__)

# -- validation and planning ---------------------------------------------------------------------
def validate_request(request: GenerationRequest) -> None:
    try:
        check_plain_name(request.name, "--name")
    except ExperimentError as exc:  # a bad request, like every other check here
        raise ConfigError(f"{exc} It becomes a file name.") from None
    by_label = request.examples_per_label is not None
    by_total = request.total_examples is not None
    if by_label == by_total:
        raise ConfigError(
            "say how many rows to generate: either --examples-per-sentiment N, or --total-examples N "
            "(with --distribution-from-file CSV to copy its label shares)" + (", not both." if by_label else ".")
        )
    if request.distribution_from_file is not None and not by_total:
        raise ConfigError("--distribution-from-file needs --total-examples N (how many rows in all).")
    for field, value, low in (
        ("examples_per_label", request.examples_per_label, 1), ("total_examples", request.total_examples, 1),
        ("batch_size", request.batch_size, 1), ("max_new_tokens", request.max_new_tokens, 1),
        ("shots", request.shots, 0), ("min_chars", request.min_chars, 0),
    ):
        if value is not None and value < low:
            raise ConfigError(f"{field} must be >= {low}, found {value}.")
    if request.max_chars <= request.min_chars:
        raise ConfigError(f"max_chars ({request.max_chars}) must be greater than min_chars ({request.min_chars}).")
    if not 0 < request.temperature <= 5:
        raise ConfigError(f"temperature must be in (0, 5], found {request.temperature}.")
    if not 0 < request.top_p <= 1:
        raise ConfigError(f"top_p must be in (0, 1], found {request.top_p}.")
    if not 0 < request.near_duplicate_threshold <= 1:
        raise ConfigError(f"near_duplicate_threshold must be in (0, 1], found {request.near_duplicate_threshold}.")
    if request.max_attempts_factor < 1:
        raise ConfigError(f"max_attempts_factor must be >= 1, found {request.max_attempts_factor}.")
    if request.filter_disagreeing and request.verify_with is None:
        raise ConfigError("--filter-disagreeing needs --verify-with MODEL_FOLDER (the classifier that judges rows).")
    tag = re.match(r"^([a-z]{2})(?:-([A-Z]{2}|[0-9]{3}))?$", request.lang)
    if not tag or tag.group(1) not in ISO_639_1:
        raise ConfigError(f"--lang {request.lang!r}: expected an ISO 639-1 code such as en, pl, de (optionally with "
                          "a region: pt-BR, es-419).")
    if request.labels is not None:
        labels = [label.strip() for label in request.labels]
        if not labels or any(not label for label in labels) or len(set(labels)) != len(labels):
            raise ConfigError(f"--labels must be distinct, non-empty names, found {request.labels}.")


def split_total(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest-remainder allocation of ``total`` rows over labels in proportion to ``weights``."""
    mass = sum(weights.values())
    exact = {k: total * w / mass for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    rest = total - sum(counts.values())
    for k in sorted(exact, key=lambda k: (counts[k] - exact[k], list(weights).index(k)))[:rest]:
        counts[k] += 1
    return counts


def plan_counts(request: GenerationRequest) -> dict[str, int]:
    """Rows to produce per label, in label order."""
    if request.distribution_from_file is not None:
        frame = read_labelled_csv(request.distribution_from_file, request.text_column, request.label_column,
                                  need_text=False)
        shares = frame[request.label_column].str.strip().value_counts()
        if request.labels is not None:
            missing = [label for label in request.labels if label not in shares.index]
            if missing:
                raise DataError(
                    f"{request.distribution_from_file} has no rows labelled {missing} (it has: "
                    f"{', '.join(sorted(shares.index))}); drop them from --labels or use another file."
                )
            weights = {label: float(shares[label]) for label in request.labels}
        else:
            weights = {label: float(shares[label]) for label in sorted(shares.index)}
        return split_total(request.total_examples, weights)
    labels = request.labels or DEFAULT_LABELS
    if request.total_examples is not None:
        return split_total(request.total_examples, dict.fromkeys(labels, 1.0))
    return dict.fromkeys(labels, request.examples_per_label)


# -- the run -------------------------------------------------------------------------------------
def generate(
    request: GenerationRequest,
    progress: Callable[[GenerationProgress], None] | None = None,
    *,
    backend=None,
) -> GenerationReport:
    """Generate, filter and write ``request.name``; return the per-label report.

    ``backend`` (tests) replaces the transformers model: any object with ``name``, ``source``,
    ``uses_chat_template`` and ``complete(prompts, seed=, max_new_tokens=, temperature=, top_p=)``.
    """
    validate_request(request)
    counts = plan_counts(request)
    paths = OutputPaths.of(request)
    if paths.csv.exists() and not request.force:
        raise ExperimentError(f"{paths.csv} already exists; pass --force to overwrite it, or choose another --name.")
    check_writable_directory(Path(request.output_dir), "--output-dir")  # before the (slow) model load
    pool, warnings = _few_shot_pool(request, list(counts))
    run = GenerationRun(request, counts, pool)
    run.open()
    started = time.perf_counter()
    if backend is None:
        from mlops.augment.synthetic.backend import HfGenerator

        backend = HfGenerator(request.model, device=request.device)
    load_s = time.perf_counter() - started
    elapsed = run.run(backend, progress)
    return run.finish(backend, elapsed, load_s, warnings)


def _few_shot_pool(request: GenerationRequest, labels: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """The (text, label) examples the prompts draw from, and warnings about them."""
    if request.seed_examples is not None:
        return seed_file_examples(request.seed_examples, request.text_column, request.label_column, labels), []
    pool, warnings = builtin_examples(labels, request.lang)
    if "movie" not in request.domain.lower():
        warnings.append(f"the built-in examples are movie reviews but --domain is {request.domain!r}; "
                        "pass --seed-examples with examples from your domain.")
    return pool, warnings
