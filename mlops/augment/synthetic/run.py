"""One generation run: the batches, the filters, resume from the partial file, and the report and metadata."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.augment.synthetic.prompts import PromptStyle, chat_messages, pick_shots, plain_prompt
from mlops.augment.synthetic.quality import QualityFilter, language_check_description, normalise
from mlops.augment.synthetic.request import (GenerationProgress, GenerationReport, GenerationRequest, LabelStats,
                                             VerificationStats)
from mlops.core.errors import ExperimentError
from mlops.core.io import file_sha256, read_json, write_json

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


class GenerationRun:
    """The state of one run (fresh or resumed from its partial file) and the steps that advance it."""

    def __init__(self, request: GenerationRequest, counts: dict[str, int], pool: list[tuple[str, str]]) -> None:
        self.request, self.counts, self.pool = request, counts, pool
        self.labels = list(counts)
        self.paths = OutputPaths.of(request)
        self.fingerprint = _fingerprint(request, counts)
        self.budget = {label: math.ceil(n * request.max_attempts_factor) + request.batch_size
                       for label, n in counts.items()}
        self.style = PromptStyle.for_request(self.labels, request.lang, request.domain)
        self.quality = QualityFilter(lang=request.lang, min_chars=request.min_chars, max_chars=request.max_chars,
                                     near_threshold=request.near_duplicate_threshold, examples=[t for t, _ in pool])
        self.verifier = None
        self.verification: VerificationStats | None = None
        self.stats = {label: LabelStats(requested=n) for label, n in counts.items()}
        self.batch_index = 0
        self.example_prompt = None
        self.resumed = False
        self.written_now = self.candidates_now = 0

    def open(self) -> None:
        """Resume the partial run with the same arguments, or start anew (``--force`` removes an old one)."""
        request, paths = self.request, self.paths
        Path(request.output_dir).mkdir(parents=True, exist_ok=True)
        state = None
        if paths.state.exists() and paths.partial.exists() and not request.force:
            state = read_json(paths.state)
            if state.get("fingerprint") != self.fingerprint or state.get("version") != STATE_VERSION:
                raise ExperimentError(
                    f"{paths.partial} is an unfinished run of {request.name!r} with different arguments; "
                    "rerun with the same arguments to resume it, or pass --force to start over."
                )
        elif request.force:
            for path in (paths.partial, paths.state):
                path.unlink(missing_ok=True)
        if request.verify_with is not None:
            from mlops.augment.synthetic.verify import load_verifier

            self.verifier = load_verifier(Path(request.verify_with), self.labels, device=request.device)
            self.verification = VerificationStats(model_folder=str(request.verify_with))
        if state is None:
            _rewrite_partial(paths.partial, [])
            self.save_state()
            return
        rows_done = _read_partial(paths.partial, state["rows_written"])
        for text, _ in rows_done:
            self.quality.remember(text)
        self.stats = _stats_from_json(state["per_label"])
        if state.get("verification") and self.verification is not None:
            self.verification = VerificationStats(**state["verification"])
        self.batch_index, self.example_prompt, self.resumed = state["batch_index"], state.get("example_prompt"), True
        logger.info("resuming %s: %d of %d rows already written", request.name, len(rows_done),
                    sum(self.counts.values()))

    def save_state(self) -> None:
        write_json(self.paths.state, {
            "version": STATE_VERSION, "fingerprint": self.fingerprint, "batch_index": self.batch_index,
            "rows_written": sum(s.produced for s in self.stats.values()), "per_label": _stats_to_json(self.stats),
            "verification": dataclasses.asdict(self.verification) if self.verification else None,
            "example_prompt": self.example_prompt,
        })

    def run(self, backend, progress: Callable[[GenerationProgress], None] | None = None) -> float:
        """Batches until every label has its rows or its attempt budget is spent; the seconds it took."""
        started = time.perf_counter()
        while slots := _assign_slots(self.stats, self.budget, self.request.batch_size):
            self._batch(backend, slots)
            if progress is not None:
                progress(GenerationProgress(
                    produced=sum(s.produced for s in self.stats.values()), requested=sum(self.counts.values()),
                    candidates=sum(s.candidates for s in self.stats.values()),
                    rejected=sum(s.rejected_total for s in self.stats.values()),
                    per_label_produced={k: s.produced for k, s in self.stats.items()},
                ))
        return time.perf_counter() - started

    def _batch(self, backend, slots: list[str]) -> None:
        request = self.request
        rng = random.Random(f"{request.seed}:{self.batch_index}")
        prompts = []
        for label in slots:
            shots = pick_shots(self.pool, label, request.shots, rng)
            prompts.append(chat_messages(self.style, shots, label) if backend.uses_chat_template
                           else plain_prompt(self.style, shots, label))
        if self.example_prompt is None:
            self.example_prompt = prompts[0]
        raw = backend.complete(prompts, seed=request.seed * 100_003 + self.batch_index,
                               max_new_tokens=request.max_new_tokens, temperature=request.temperature,
                               top_p=request.top_p)
        texts = [normalise(t, self.style.strip_prefixes) for t in raw]
        self.candidates_now += len(texts)
        verdicts = self._quality_verdicts(texts, slots)
        agrees = self._verify(texts, slots, verdicts)
        accepted = self._accept(texts, slots, verdicts, agrees)
        _append_rows(self.paths.partial, accepted)
        self.batch_index += 1
        self.written_now += len(accepted)
        self.save_state()

    def _quality_verdicts(self, texts: list[str], slots: list[str]) -> list[str | None]:
        """The quality filters, in order; accepted rows are remembered at once so a batch cannot repeat itself."""
        verdicts: list[str | None] = []
        for text, label in zip(texts, slots, strict=True):
            self.stats[label].candidates += 1
            reason = self.quality.reason(text)
            if reason is None:
                self.quality.remember(text)
            verdicts.append(reason)
        return verdicts

    def _verify(self, texts: list[str], slots: list[str], verdicts: list[str | None]) -> list[bool | None]:
        """Whether the verifier model gives each text its intended label (None: not scored)."""
        agrees: list[bool | None] = [None] * len(texts)
        if self.verifier is None:
            return agrees
        from mlops.augment.synthetic.verify import predicted_labels

        verification = self.verification
        scored = [i for i, t in enumerate(texts) if verdicts[i] != "empty"]
        predicted = predicted_labels(self.verifier, [texts[i] for i in scored])
        for i, p in zip(scored, predicted, strict=True):
            agrees[i] = p == slots[i]
            verification.candidates_scored += 1
            verification.candidates_agreeing += agrees[i]
            if verdicts[i] is None:
                verification.accepted_scored += 1
                verification.accepted_agreeing += agrees[i]
                if self.request.filter_disagreeing and not agrees[i]:
                    verdicts[i] = "verifier_disagrees"
        return agrees

    def _accept(self, texts: list[str], slots: list[str], verdicts: list[str | None],
                agrees: list[bool | None]) -> list[tuple[str, str]]:
        accepted: list[tuple[str, str]] = []
        for i, (text, label) in enumerate(zip(texts, slots, strict=True)):
            stats = self.stats[label]
            if verdicts[i] is not None:
                stats.rejected[verdicts[i]] += 1
            elif stats.produced >= stats.requested:
                stats.surplus += 1
            else:
                stats.produced += 1
                accepted.append((text, label))
                if self.verification is not None and agrees[i] is not None:
                    self.verification.written_scored += 1
                    self.verification.written_agreeing += agrees[i]
        return accepted

    def finish(self, backend, elapsed: float, load_s: float, warnings: list[str]) -> GenerationReport:
        """The report; the metadata file; the partial file renamed to the final CSV (atomically)."""
        request, stats = self.request, self.stats
        per_minute = elapsed > 0 and self.candidates_now
        report = GenerationReport(
            name=request.name, model=backend.name, model_source=str(backend.source), lang=request.lang,
            labels=self.labels, per_label=stats, output_csv=self.paths.csv, metadata_json=self.paths.meta,
            elapsed_s=round(elapsed, 2), load_s=round(load_s, 2),
            rows_per_minute=round(self.written_now / elapsed * 60, 2) if per_minute else None,
            candidates_per_minute=round(self.candidates_now / elapsed * 60, 2) if per_minute else None,
            resumed=self.resumed, language_check=language_check_description(request.lang),
            verification=self.verification, warnings=warnings,
        )
        for label in report.shortfall:
            report.warnings.append(
                f"{label}: produced {stats[label].produced} of {stats[label].requested} rows after "
                f"{stats[label].candidates} candidates (limit {self.budget[label]}, set with max_attempts_factor); "
                "see the rejection counts, and try another --model, more --seed-examples or looser filters."
            )
        write_json(self.paths.meta, self._metadata(backend, report), ensure_ascii=False)
        os.replace(self.paths.partial, self.paths.csv)
        self.paths.state.unlink(missing_ok=True)
        return report

    def _metadata(self, backend, report: GenerationReport) -> dict[str, Any]:
        request = self.request
        return {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "request": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(request).items()},
            "model": {"name": backend.name, "source": str(backend.source),
                      "prompt_format": "chat template" if backend.uses_chat_template else "plain few-shot completion"},
            "prompt": {"style": dataclasses.asdict(self.style), "example_prompt": self.example_prompt,
                       "few_shot_source": str(request.seed_examples) if request.seed_examples else "built-in",
                       "few_shot_pool_size": len(self.pool)},
            "filters": {"min_chars": request.min_chars, "max_chars": request.max_chars,
                        "near_duplicate_threshold": request.near_duplicate_threshold,
                        "language_check": report.language_check},
            "report": report.to_dict(),
        }
