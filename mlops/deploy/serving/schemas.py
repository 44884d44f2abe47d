"""Request and response bodies; the limits (texts per request, characters per text) are part of the schema."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, model_validator


class Prediction(BaseModel):
    label: str | None = Field(default=None, description="the most probable label (a single-label model)")
    labels: list[str] | None = Field(default=None, description="a multi-label model: every label at or above its "
                                     "threshold (maybe none)")
    probabilities: dict[str, float]


class PredictResponse(BaseModel):
    predictions: list[Prediction]


class ErrorResponse(BaseModel):
    error: str
    limit: str | None = None
    value: int | None = None


def _one_source(request):
    if (request.text is None) == (request.texts is None):
        raise ValueError("send exactly one of 'text' (one string) or 'texts' (a list of strings)")
    if request.text_pairs is not None:
        if request.texts is None:
            raise ValueError("'text_pairs' goes with 'texts' (one pair per text)")
        if len(request.text_pairs) != len(request.texts):
            raise ValueError(f"'text_pairs' has {len(request.text_pairs)} items but 'texts' has "
                             f"{len(request.texts)}; send one pair per text")
    return request


def predict_request_model(max_texts: int, max_chars: int) -> type[BaseModel]:
    """The /predict body with these limits declared in it (and so in the OpenAPI schema)."""
    text = Annotated[str, StringConstraints(max_length=max_chars)]
    texts = Annotated[list[text], Field(min_length=1, max_length=max_texts,
                                        description=f"1 to {max_texts} texts of at most {max_chars} characters")]
    model = create_model(
        "PredictRequest",
        __config__=ConfigDict(extra="forbid"),
        __validators__={"_one_source": model_validator(mode="after")(_one_source)},
        text=(text | None, Field(default=None, description="one text (instead of 'texts')")),
        texts=(texts | None, None),
        text_pairs=(texts | None, Field(default=None, description="second texts, for sentence-pair models")),
    )
    return model
