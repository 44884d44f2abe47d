"""SetFit (Tunstall et al. 2022): few-shot classification with a sentence transformer, through the SetFit library.

Training has two stages. First the sentence transformer (the shipped all-MiniLM-L6-v2 by default) is fine-tuned
contrastively on pairs of labelled rows: same label -> cosine similarity 1, different labels -> 0,
``num_iterations`` pairs drawn per row (SetFit's default 20), at most ``max_steps`` batches of pairs. Then a
logistic regression head is fitted on the tuned embeddings. With 8 to 64 rows per class this often beats
fine-tuning a classification head end to end, which needs more rows to move the encoder.

The val rows are not used: SetFit has no early stopping. Saved as the sentence transformer's own folder
(safetensors) plus the head's weights in safetensors and its classes in JSON, nothing pickled. Prediction needs
sentence-transformers only, not SetFit.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from mlops.core.config import ModelConfig
from mlops.core.errors import ModelError
from mlops.core.model_interface import FitContext, ModelInterface, TrainingArguments
from mlops.core.text_dataset import TextDataset
from models.hf_common.arithmetic import torch_arithmetic
from models.hf_common.training import ThreadBudget

logger = logging.getLogger(__name__)

BODY_DIR = "body"
HEAD_FILE = "head.safetensors"
META_FILE = "setfit.json"
FORMAT_VERSION = 1


class SetFitTrainingArguments(TrainingArguments):
    batch_size: int = Field(default=16, ge=1, description="pairs per contrastive step")
    num_iterations: int = Field(default=20, ge=1, description="pairs drawn per labelled row (SetFit's default)")
    num_epochs: int = Field(default=1, ge=1, description="passes over the drawn pairs")
    max_steps: int | None = Field(default=200, ge=1, description="at most this many contrastive steps (null: all "
                                  "pairs); bounds the cost once there are more than ~80 rows")
    body_learning_rate: float = Field(default=2e-5, gt=0)
    warmup_proportion: float = Field(default=0.1, ge=0, le=1)
    max_length: int = Field(default=128, ge=8, description="tokens per text (longer texts are cut)")
    head_c: float = Field(default=1.0, gt=0, description="inverse L2 strength of the logistic regression head")
    eval_batch_size: int = Field(default=64, ge=1)
    num_threads: Annotated[int, Field(ge=1)] | Literal["adaptive"] | None = Field(
        default=None, description="torch threads; default: this process's physical cores, fixed (see minilm)")
    trust_remote_code: bool = False


def _head_proba(embeddings: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """scikit-learn's LogisticRegression.predict_proba from its weights (binary: sigmoid; else softmax)."""
    from scipy.special import expit, softmax

    scores = embeddings @ coef.T + intercept
    if coef.shape[0] == 1:
        positive = expit(scores[:, 0])
        return np.column_stack([1.0 - positive, positive])
    return softmax(scores, axis=1)


class SetFitClassifier(ModelInterface):
    training_arguments_class = SetFitTrainingArguments
    training_arguments: SetFitTrainingArguments

    def __init__(self, config: ModelConfig, training_arguments: SetFitTrainingArguments | None = None) -> None:
        super().__init__(config, training_arguments)
        self._body = None
        self._coef: np.ndarray | None = None
        self._intercept: np.ndarray | None = None
        self._columns: list[int] = []  # the label index of each head class
        self._threads: ThreadBudget | None = None
        self._info: dict[str, Any] = {}

    @classmethod
    def arithmetic(cls, arguments: SetFitTrainingArguments, device: str | None,
                   runtime: dict[str, Any] | None = None) -> dict[str, Any]:
        return torch_arithmetic(arguments.num_threads, "fp32", device)

    def _setup(self, device: str | None) -> str:
        from models.hf_common.device import pick_device

        device = pick_device(device)
        self._threads = ThreadBudget(self.training_arguments.num_threads)
        self._info.update(device=device, precision="fp32", torch_threads=self._threads.apply())
        return device

    def fit(self, train: TextDataset, val: TextDataset | None = None, *, labels: Sequence[str],
            context: FitContext | None = None) -> SetFitClassifier:
        context = context or FitContext()
        self.labels = list(labels)
        index = {label: i for i, label in enumerate(self.labels)}
        unknown = sorted(set(train.labels or []) - set(index))
        if train.labels is None or unknown:
            raise ModelError(f"SetFit needs training labels among {self.labels}; found {unknown or 'none'}.")
        present = sorted({index[y] for y in train.labels})
        if len(present) < 2:
            raise ModelError(f"SetFit needs rows of at least two classes to train; found only {self.labels[present[0]]!r}.")
        device = self._setup(context.device)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="setfit-") as scratch:
            model, steps = self._train(train, [index[y] for y in train.labels], device, context,
                                       Path(context.work_dir or scratch))
        self._body = model.model_body
        head = model.model_head
        self._columns = [int(c) for c in head.classes_]
        self._coef = np.asarray(head.coef_, dtype=np.float64)
        self._intercept = np.asarray(head.intercept_, dtype=np.float64)
        self._info.update(contrastive_steps=steps, train_rows=len(train), classes_trained=len(present),
                          train_s=round(time.perf_counter() - started, 2))
        return self

    def _train(self, train: TextDataset, y: list[int], device: str, context: FitContext, work_dir: Path):
        from datasets import Dataset
        from sentence_transformers import SentenceTransformer
        from setfit import SetFitModel, Trainer
        from setfit import TrainingArguments as SetFitArguments
        from sklearn.linear_model import LogisticRegression

        from models.hf_common.resolve import resolve_pretrained

        args = self.training_arguments
        resolved = resolve_pretrained(self.config.model_name or "sentence-transformers/all-MiniLM-L6-v2")
        self._info["model_source"] = resolved.describe()
        body = SentenceTransformer(resolved.source, device=device, trust_remote_code=args.trust_remote_code)
        body.max_seq_length = args.max_length
        head = LogisticRegression(C=args.head_c, max_iter=1000, random_state=context.seed)
        model = SetFitModel(model_body=body, model_head=head)
        # SetFit draws num_iterations positive and negative pairs per row; the Trainer's max_steps would repeat
        # them until it is reached, so it is set only when the pairs would take more steps than the budget.
        steps = math.ceil(2 * args.num_iterations * len(y) / args.batch_size) * args.num_epochs
        settings = SetFitArguments(
            output_dir=str(work_dir / "setfit"), batch_size=args.batch_size, num_epochs=args.num_epochs,
            num_iterations=args.num_iterations,
            max_steps=args.max_steps if args.max_steps and args.max_steps < steps else -1,
            body_learning_rate=args.body_learning_rate, warmup_proportion=args.warmup_proportion,
            max_length=args.max_length, seed=context.seed, report_to="none", save_strategy="no",
            logging_strategy="no", show_progress_bar=context.show_progress)
        trainer = Trainer(model=model, args=settings,
                          train_dataset=Dataset.from_dict({"text": list(train.texts), "label": y}))
        trainer.train()
        return model, int(trainer.state.global_step) if getattr(trainer, "state", None) else None

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._threads is not None:
            self._threads.apply()
        return self._body.encode(texts, batch_size=self.training_arguments.eval_batch_size, convert_to_numpy=True,
                                 show_progress_bar=False).astype(np.float64)

    def predict_proba(self, data: TextDataset) -> np.ndarray:
        if self._body is None:
            raise ModelError("SetFitClassifier.predict_proba called before fit or load.")
        proba = np.zeros((len(data), len(self.labels)))
        if len(data):
            proba[:, self._columns] = _head_proba(self._embed(list(data.texts)), self._coef, self._intercept)
        return proba

    def save(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        if self._body is None:
            raise ModelError("SetFitClassifier.save called before fit.")
        self._body.save(str(directory / BODY_DIR), safe_serialization=True)
        save_file({"coef": np.ascontiguousarray(self._coef), "intercept": np.ascontiguousarray(self._intercept)},
                  str(directory / HEAD_FILE))
        meta = {"format_version": FORMAT_VERSION, "labels": self.labels, "head_columns": self._columns,
                "max_length": self.training_arguments.max_length}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, config: ModelConfig, *, device: str | None = None) -> SetFitClassifier:
        from safetensors.numpy import load_file
        from sentence_transformers import SentenceTransformer

        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise ModelError(f"{directory} is not a saved SetFit model: {META_FILE} is missing.")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{meta_path} has format version {meta.get('format_version')}; this code reads "
                             f"{FORMAT_VERSION}.")
        model = cls(config)
        device = model._setup(device)
        model.labels = list(meta["labels"])
        model._columns = [int(c) for c in meta["head_columns"]]
        arrays = load_file(str(directory / HEAD_FILE))
        model._coef, model._intercept = arrays["coef"].astype(np.float64), arrays["intercept"].astype(np.float64)
        model._body = SentenceTransformer(str(directory / BODY_DIR), device=device,
                                          trust_remote_code=model.training_arguments.trust_remote_code)
        model._body.max_seq_length = int(meta["max_length"])
        return model

    def runtime_info(self) -> dict[str, Any]:
        return dict(self._info)
