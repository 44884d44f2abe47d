"""What a generation run is asked to do, and what it reports back."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Rejection reasons, in the order the filters apply them (a row is counted under the first that fires).
REJECTION_REASONS = (
    "empty",
    "too_short",
    "too_long",
    "wrong_language",
    "copy_of_example",
    "duplicate",
    "near_duplicate",
    "verifier_disagrees",
)


#: The ISO 639-1 language codes (183), for ``--lang``: a code outside them is refused, not guessed at.
ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el
en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it
iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt
my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl
sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo
za zh zu""".split())


@dataclass
class GenerationRequest:
    """One ``data-generate`` run. Give ``examples_per_label``, or ``total_examples`` (split like the
    labels of ``distribution_from_file`` when given, else evenly)."""

    name: str
    output_dir: Path = Path("data/generated")
    examples_per_label: int | None = None
    distribution_from_file: Path | None = None
    total_examples: int | None = None
    labels: list[str] | None = None  # default: the distribution file's labels, else negative/neutral/positive
    lang: str = "en"
    model: str | None = None  # hub id, local folder; None = the offline google/gemma-3-270m
    seed_examples: Path | None = None  # CSV with text,label columns; default: built-in examples
    text_column: str = "text"  # columns of seed_examples and distribution_from_file
    label_column: str = "label"
    domain: str = "movie reviews"
    temperature: float = 0.9
    top_p: float = 0.95
    batch_size: int = 8
    seed: int = 42
    force: bool = False
    verify_with: Path | None = None  # a trained model folder (mlops_model.json + weights)
    filter_disagreeing: bool = False  # drop rows whose verifier label differs from the asked label
    max_new_tokens: int = 64
    min_chars: int = 20
    max_chars: int = 400
    shots: int = 4  # few-shot examples per prompt
    near_duplicate_threshold: float = 0.8  # Jaccard similarity of word 3-grams
    max_attempts_factor: float = 5.0  # give up on a label after factor x requested candidates
    device: str | None = None


@dataclass
class GenerationProgress:
    """Sent to the progress callback after every batch."""

    produced: int
    requested: int
    candidates: int
    rejected: int
    per_label_produced: dict[str, int]


@dataclass
class LabelStats:
    requested: int
    produced: int = 0
    candidates: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECTION_REASONS, 0))
    surplus: int = 0  # accepted candidates beyond the request (dropped, not rejected)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


@dataclass
class VerificationStats:
    """Agreement between the asked label and a trained classifier's prediction."""

    model_folder: str
    candidates_scored: int = 0  # every non-empty candidate
    candidates_agreeing: int = 0
    accepted_scored: int = 0  # candidates that passed the quality filters
    accepted_agreeing: int = 0
    written_scored: int = 0  # rows written to the CSV
    written_agreeing: int = 0

    @staticmethod
    def _share(a: int, n: int) -> float | None:
        return a / n if n else None

    @property
    def agreement_before_filtering(self) -> float | None:
        return self._share(self.candidates_agreeing, self.candidates_scored)

    @property
    def agreement_after_quality_filters(self) -> float | None:
        return self._share(self.accepted_agreeing, self.accepted_scored)

    @property
    def agreement_written(self) -> float | None:
        return self._share(self.written_agreeing, self.written_scored)


@dataclass
class GenerationReport:
    name: str
    model: str
    model_source: str
    lang: str
    labels: list[str]
    per_label: dict[str, LabelStats]
    output_csv: Path
    metadata_json: Path
    elapsed_s: float  # generation time in this invocation (model loading excluded)
    load_s: float
    rows_per_minute: float | None  # rows written per minute of generation in this invocation
    candidates_per_minute: float | None
    resumed: bool
    language_check: str
    verification: VerificationStats | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def requested(self) -> int:
        return sum(s.requested for s in self.per_label.values())

    @property
    def produced(self) -> int:
        return sum(s.produced for s in self.per_label.values())

    @property
    def shortfall(self) -> dict[str, int]:
        return {k: s.requested - s.produced for k, s in self.per_label.items() if s.produced < s.requested}

    def table(self) -> tuple[list[str], list[list[Any]]]:
        """Headers and rows (one per label, then a total): requested, produced, rejected by reason.
        Reason columns that are zero everywhere are left out."""
        reasons = [r for r in REJECTION_REASONS if any(s.rejected[r] for s in self.per_label.values())]
        headers = ["label", "requested", "produced", "candidates", *reasons, "rejected"]
        rows: list[list[Any]] = []
        for label, s in self.per_label.items():
            rows.append([label, s.requested, s.produced, s.candidates, *(s.rejected[r] for r in reasons), s.rejected_total])
        stats = list(self.per_label.values())
        rows.append([
            "total", self.requested, self.produced, sum(s.candidates for s in stats),
            *(sum(s.rejected[r] for s in stats) for r in reasons), sum(s.rejected_total for s in stats),
        ])
        return headers, rows

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["output_csv"] = str(self.output_csv)
        data["metadata_json"] = str(self.metadata_json)
        data["requested"], data["produced"], data["shortfall"] = self.requested, self.produced, self.shortfall
        if self.verification is not None:
            v = self.verification
            data["verification"].update(
                agreement_before_filtering=v.agreement_before_filtering,
                agreement_after_quality_filters=v.agreement_after_quality_filters,
                agreement_written=v.agreement_written,
            )
        return data
