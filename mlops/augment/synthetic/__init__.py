"""Synthetic labelled data from a causal LM: ``generate(GenerationRequest) -> GenerationReport``.

Nothing heavy is imported here: transformers loads only when a run starts.
"""

from mlops.augment.synthetic.generator import generate, plan_counts, validate_request
from mlops.augment.synthetic.request import (
                                             REJECTION_REASONS,
                                             GenerationProgress,
                                             GenerationReport,
                                             GenerationRequest,
                                             LabelStats,
                                             VerificationStats,
)

__all__ = [
    "REJECTION_REASONS",
    "GenerationProgress",
    "GenerationReport",
    "GenerationRequest",
    "LabelStats",
    "VerificationStats",
    "generate",
    "plan_counts",
    "validate_request",
]
