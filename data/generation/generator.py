"""``generate``: synthetic labelled text from a causal LM, filtered, resumable, with a report.

Files in ``output_dir`` for ``name``: ``NAME.csv`` (text,label) and ``NAME.meta.json`` (request,
model, prompt format, report) at the end; while running, accepted rows are appended per batch to
``NAME.partial.csv`` and the counters to ``NAME.state.json``, so an interrupted run started again
with the same arguments resumes where it stopped (``force`` starts over).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from data.generation.examples import DEFAULT_LABELS, builtin_examples, read_labelled_csv, seed_file_examples
from data.generation.prompts import PromptStyle, chat_messages, pick_shots, plain_prompt
from data.generation.quality import QualityFilter, language_check_description, normalise
from data.generation.request import (
    GenerationProgress,
    GenerationReport,
    GenerationRequest,
    LabelStats,
    VerificationStats,
)
from mlops.errors import ConfigError, DataError, ExperimentError
from mlops.io import check_plain_name, file_sha256, read_json, write_json

logger = logging.getLogger(__name__)

STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class OutputPaths:
    csv: Path
    meta: Path
    partial: Path
    state: Path

    @classmethod
    def of(cls, request: GenerationRequest) -> OutputPaths:
        d, n = Path(request.output_dir), request.name
        return cls(d / f"{n}.csv", d / f"{n}.meta.json", d / f"{n}.partial.csv", d / f"{n}.state.json")


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
    if not re.match(r"^[a-z]{2,3}(-[A-Za-z0-9]+)?$", request.lang):
        raise ConfigError(f"--lang {request.lang!r}: expected an ISO 639-1 code such as en, pl, de.")
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


def _fingerprint(request: GenerationRequest, counts: dict[str, int]) -> str:
    fields = dataclasses.asdict(request)
    for key in ("force", "output_dir", "device", "name"):
        fields.pop(key)
    for key in ("seed_examples", "distribution_from_file", "verify_with"):
        value = fields[key]
        fields[key] = None if value is None else str(value)
    for key in ("seed_examples", "distribution_from_file"):
        path = getattr(request, key)
        if path is not None:
            fields[key + "_sha256"] = file_sha256(Path(path))
    fields["counts"] = counts
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


# -- files ---------------------------------------------------------------------------------------
def _read_partial(path: Path, rows_expected: int) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(handle)]
    if len(rows) < rows_expected:
        raise ExperimentError(
            f"{path} holds {len(rows)} rows but its state file says {rows_expected}; the partial run is "
            "damaged. Start over with --force."
        )
    if len(rows) > rows_expected:  # interrupted between appending rows and saving the state
        rows = rows[:rows_expected]
        _rewrite_partial(path, rows)
    return rows


def _rewrite_partial(path: Path, rows: list[tuple[str, str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    os.replace(tmp, path)


def _append_rows(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())


def _stats_to_json(stats: dict[str, LabelStats]) -> dict[str, Any]:
    return {k: dataclasses.asdict(v) for k, v in stats.items()}


def _stats_from_json(data: dict[str, Any]) -> dict[str, LabelStats]:
    return {k: LabelStats(**v) for k, v in data.items()}


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
    labels = list(counts)
    paths = OutputPaths.of(request)
    warnings: list[str] = []

    if paths.csv.exists() and not request.force:
        raise ExperimentError(
            f"{paths.csv} already exists; pass --force to overwrite it, or choose another --name."
        )
    if request.seed_examples is not None:
        pool = seed_file_examples(request.seed_examples, request.text_column, request.label_column, labels)
    else:
        pool, notes = builtin_examples(labels, request.lang)
        warnings += notes
        if "movie" not in request.domain.lower():
            warnings.append(f"the built-in examples are movie reviews but --domain is {request.domain!r}; "
                            "pass --seed-examples with examples from your domain.")
    fingerprint = _fingerprint(request, counts)
    Path(request.output_dir).mkdir(parents=True, exist_ok=True)

    state: dict[str, Any] | None = None
    if paths.state.exists() and paths.partial.exists() and not request.force:
        state = read_json(paths.state)
        if state.get("fingerprint") != fingerprint or state.get("version") != STATE_VERSION:
            raise ExperimentError(
                f"{paths.partial} is an unfinished run of {request.name!r} with different arguments; "
                "rerun with the same arguments to resume it, or pass --force to start over."
            )
    elif request.force:
        for p in (paths.partial, paths.state):
            p.unlink(missing_ok=True)

    verifier = None
    verification: VerificationStats | None = None
    if request.verify_with is not None:
        from data.generation.verify import load_verifier

        verifier = load_verifier(Path(request.verify_with), labels, device=request.device)
        verification = VerificationStats(model_folder=str(request.verify_with))

    quality = QualityFilter(
        lang=request.lang, min_chars=request.min_chars, max_chars=request.max_chars,
        near_threshold=request.near_duplicate_threshold, examples=[t for t, _ in pool],
    )
    if state is not None:
        rows_done = _read_partial(paths.partial, state["rows_written"])
        for text, _ in rows_done:
            quality.remember(text)
        stats = _stats_from_json(state["per_label"])
        if state.get("verification") and verification is not None:
            verification = VerificationStats(**state["verification"])
        batch_index = state["batch_index"]
        example_prompt = state.get("example_prompt")
        logger.info("resuming %s: %d of %d rows already written", request.name, len(rows_done), sum(counts.values()))
    else:
        _rewrite_partial(paths.partial, [])
        rows_done = []
        stats = {label: LabelStats(requested=n) for label, n in counts.items()}
        batch_index = 0
        example_prompt = None

    started = time.perf_counter()
    if backend is None:
        from data.generation.backend import HfGenerator

        backend = HfGenerator(request.model, device=request.device)
    load_s = time.perf_counter() - started
    style = PromptStyle.for_request(labels, request.lang, request.domain)
    budget = {label: math.ceil(n * request.max_attempts_factor) + request.batch_size for label, n in counts.items()}
    written_now = 0
    candidates_now = 0
    gen_started = time.perf_counter()

    def save_state() -> None:
        write_json(paths.state, {
            "version": STATE_VERSION, "fingerprint": fingerprint, "batch_index": batch_index,
            "rows_written": sum(s.produced for s in stats.values()), "per_label": _stats_to_json(stats),
            "verification": dataclasses.asdict(verification) if verification else None,
            "example_prompt": example_prompt,
        })

    if state is None:
        save_state()
    while True:
        slots = _assign_slots(stats, budget, request.batch_size)
        if not slots:
            break
        rng = random.Random(f"{request.seed}:{batch_index}")
        prompts = []
        for label in slots:
            shots = pick_shots(pool, label, request.shots, rng)
            prompts.append(chat_messages(style, shots, label) if backend.uses_chat_template
                           else plain_prompt(style, shots, label))
        if example_prompt is None:
            example_prompt = prompts[0]
        raw = backend.complete(
            prompts, seed=request.seed * 100_003 + batch_index, max_new_tokens=request.max_new_tokens,
            temperature=request.temperature, top_p=request.top_p,
        )
        texts = [normalise(t, style.strip_prefixes) for t in raw]
        candidates_now += len(texts)
        # quality filters, in order; accepted rows are remembered at once so a batch cannot repeat itself
        verdicts: list[str | None] = []
        for text, label in zip(texts, slots, strict=True):
            stats[label].candidates += 1
            reason = quality.reason(text)
            if reason is None:
                quality.remember(text)
            verdicts.append(reason)
        agrees: list[bool | None] = [None] * len(texts)
        if verifier is not None:
            from data.generation.verify import predicted_labels

            scored = [i for i, t in enumerate(texts) if verdicts[i] != "empty"]
            predicted = predicted_labels(verifier, [texts[i] for i in scored])
            for i, p in zip(scored, predicted, strict=True):
                agrees[i] = p == slots[i]
                verification.candidates_scored += 1
                verification.candidates_agreeing += agrees[i]
                if verdicts[i] is None:
                    verification.accepted_scored += 1
                    verification.accepted_agreeing += agrees[i]
                    if request.filter_disagreeing and not agrees[i]:
                        verdicts[i] = "verifier_disagrees"
        accepted: list[tuple[str, str]] = []
        for i, (text, label) in enumerate(zip(texts, slots, strict=True)):
            if verdicts[i] is not None:
                stats[label].rejected[verdicts[i]] += 1
            elif stats[label].produced >= stats[label].requested:
                stats[label].surplus += 1
            else:
                stats[label].produced += 1
                accepted.append((text, label))
                if verification is not None and agrees[i] is not None:
                    verification.written_scored += 1
                    verification.written_agreeing += agrees[i]
        _append_rows(paths.partial, accepted)
        batch_index += 1
        written_now += len(accepted)
        save_state()
        if progress is not None:
            progress(GenerationProgress(
                produced=sum(s.produced for s in stats.values()), requested=sum(counts.values()),
                candidates=sum(s.candidates for s in stats.values()),
                rejected=sum(s.rejected_total for s in stats.values()),
                per_label_produced={k: s.produced for k, s in stats.items()},
            ))

    elapsed = time.perf_counter() - gen_started
    report = GenerationReport(
        name=request.name, model=backend.name, model_source=str(backend.source), lang=request.lang, labels=labels,
        per_label=stats, output_csv=paths.csv, metadata_json=paths.meta, elapsed_s=round(elapsed, 2),
        load_s=round(load_s, 2),
        rows_per_minute=round(written_now / elapsed * 60, 2) if elapsed > 0 and candidates_now else None,
        candidates_per_minute=round(candidates_now / elapsed * 60, 2) if elapsed > 0 and candidates_now else None,
        resumed=state is not None, language_check=language_check_description(request.lang),
        verification=verification, warnings=warnings,
    )
    for label, missing in report.shortfall.items():
        report.warnings.append(
            f"{label}: produced {stats[label].produced} of {stats[label].requested} rows after "
            f"{stats[label].candidates} candidates (limit {budget[label]}, set with max_attempts_factor); "
            "see the rejection counts, and try another --model, more --seed-examples or looser filters."
        )
    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "request": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(request).items()},
        "model": {"name": backend.name, "source": str(backend.source),
                  "prompt_format": "chat template" if backend.uses_chat_template else "plain few-shot completion"},
        "prompt": {"style": dataclasses.asdict(style), "example_prompt": example_prompt,
                   "few_shot_source": str(request.seed_examples) if request.seed_examples else "built-in",
                   "few_shot_pool_size": len(pool)},
        "filters": {"min_chars": request.min_chars, "max_chars": request.max_chars,
                    "near_duplicate_threshold": request.near_duplicate_threshold,
                    "language_check": report.language_check},
        "report": report.to_dict(),
    }
    write_json(paths.meta, meta, ensure_ascii=False)
    os.replace(paths.partial, paths.csv)
    paths.state.unlink(missing_ok=True)
    return report


def _assign_slots(stats: dict[str, LabelStats], budget: dict[str, int], batch_size: int) -> list[str]:
    """Labels of the next batch's prompts: the largest remaining need first, with a margin for rejects."""
    need: dict[str, int] = {}
    for label, s in stats.items():
        deficit = s.requested - s.produced
        room = budget[label] - s.candidates
        if deficit <= 0 or room <= 0:
            continue
        reject_rate = min(s.rejected_total / s.candidates, 0.8) if s.candidates else 0.0
        need[label] = min(room, math.ceil(deficit / (1 - reject_rate)))
    slots: list[str] = []
    while need and len(slots) < batch_size:
        label = max(need, key=lambda k: need[k])
        slots.append(label)
        need[label] -= 1
        if need[label] <= 0:
            del need[label]
    return slots
