"""Prediction with an ONNX Runtime export of a fine-tuned encoder (written by ``cli export-model``).

Inference only, and light: it needs ``onnxruntime``, ``tokenizers`` and numpy, not torch or transformers,
so ``predict-new --text`` starts in about a second. Each call tokenizes its rows once (Rust, no padding),
sorts them by length and pads per batch, so batches carry little padding. Batches are shared out to
several sessions with few threads each (data parallel), which on small CPUs beats one session with
many threads (see docs/benchmarks.md), and a core taken by another process then slows only its own batch. An int8 export may carry the
exact fp32 graph too: rows whose int8 top-two margin is under the export's threshold are re-scored with it.
A calibrated encoder's temperature (``export.json``, 1 when absent) divides the logits before the softmax.
"""

from __future__ import annotations

import json
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from mlops.core.config import ModelConfig
from mlops.core.errors import ModelError
from mlops.core.model_interface import FitContext, ModelInterface, TrainingArguments
from mlops.core.text_dataset import TextDataset
from models.hf_common.batching import padding_aware_batches
from models.hf_common.truncation import head_tail_cut
from models.hf_common.windows import Windows, rust_offsets

EXPORT_FILE = "export.json"
EXPORT_FORMAT = 1
TOKENIZER_FILE = "tokenizer.json"


#: Graph fusions left out: the fused SkipLayerNormalization kernel is slower for int8 on one thread than
#: the unfused Add + LayerNormalization (fp32: the same); the profile is in docs/benchmarks.md.
DISABLED_OPTIMIZERS = ["SkipLayerNormFusion"]


def open_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # Idle pool threads sleep rather than spin: spinning after every call took a core that the other session,
    # the tokenizer or a server's event loop needed (2 ms of CPU per text at one text per call).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=DISABLED_OPTIMIZERS)


#: What one ONNX Runtime call costs beyond its tokens, in padded token slots, for cutting batches: a micro-batch of
#: 32 sentences of mixed lengths scored 1.6x faster cut this way than in two batches of 16 (docs/benchmarks.md).
CALL_COST_TOKENS = 16.0
#: Most sessions scoring in parallel by default (each holds its own copy of the weights).
MAX_DEFAULT_WORKERS = 4


class OnnxEncoderArguments(TrainingArguments):
    batch_size: int | None = Field(default=None, ge=1, description="rows per ONNX Runtime call; default: 16 for "
                                   "single-thread workers, 64 otherwise")
    num_threads: int | None = Field(default=None, ge=1, description="threads in all; default: physical cores")
    workers: int | None = Field(default=None, ge=1, description="sessions scoring batches in parallel, each with "
                                f"num_threads / workers threads; default: num_threads, at most {MAX_DEFAULT_WORKERS}")

    def layout(self, cores: int) -> tuple[int, int, int]:
        """(workers, threads per worker, batch size) on a machine with ``cores`` usable cores."""
        threads = self.num_threads or cores
        workers = min(self.workers or min(threads, MAX_DEFAULT_WORKERS), threads)
        per_worker = max(1, threads // workers)
        return workers, per_worker, self.batch_size or (16 if per_worker == 1 else 64)


class OnnxEncoderClassifier(ModelInterface):
    """Loads ``model.onnx`` + ``tokenizer.json`` + ``export.json``; ``fit`` is not supported."""

    training_arguments_class = OnnxEncoderArguments

    def __init__(self, config: ModelConfig, training_arguments: OnnxEncoderArguments | None = None) -> None:
        super().__init__(config, training_arguments)
        self._sessions: list = []
        self._pool: ThreadPoolExecutor | None = None
        self._session_path: Path | None = None
        self._workers = 1
        self._worker_threads = 1
        self._tokenizer = None
        self._cutter = None  # truncation head_tail: the tokenizer without truncation, cut afterwards
        self._head_tokens: int | None = None
        self._windows = None  # truncation windows: models.hf_common.windows.Windows over the untruncated tokenizer
        self._input_names: list[str] = []
        self._max_length = 0
        self._uses_pairs = False
        self._pad_id = 0
        self._batch_size = 16
        self._rescore_session = None
        self._rescore_below = 0.0
        self._temperature = 1.0
        self._multi_label = False
        self._info: dict[str, Any] = {}

    def fit(self, train: TextDataset, val: TextDataset | None = None, *, labels, context: FitContext | None = None):
        raise ModelError("an ONNX export is for prediction only; train with the model config it was exported from.")

    def save(self, directory: Path) -> None:
        raise ModelError("an ONNX export is written by `cli export-model`, not saved again.")

    @classmethod
    def load(cls, directory: Path, config: ModelConfig, *, device: str | None = None) -> OnnxEncoderClassifier:
        if device not in (None, "cpu"):
            raise ModelError(f"ONNX exports run on the CPU; device {device!r} was asked for. Use the torch model "
                             "folder (predict-new --runtime torch) to predict on a GPU.")
        from tokenizers import Tokenizer

        from models.hf_common.training import available_cores

        directory = Path(directory)
        try:
            meta = json.loads((directory / EXPORT_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{directory} has no readable {EXPORT_FILE} ({exc}); re-run `cli export-model`.") from None
        if meta.get("format") != EXPORT_FORMAT:
            raise ModelError(f"{directory / EXPORT_FILE} has format {meta.get('format')!r}, expected "
                             f"{EXPORT_FORMAT}; re-run `cli export-model` with this version of the tool.")
        args: OnnxEncoderArguments = cls(config).training_arguments  # validated once, handed on below
        threads = args.num_threads or available_cores()
        workers, per_worker, _ = args.layout(threads)
        try:
            tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
            session = open_session(directory / meta["onnx_file"], per_worker)
            rescore = meta.get("rescore")
            rescore_session = open_session(directory / rescore["onnx_file"], threads) if rescore else None
        except Exception as exc:  # noqa: BLE001 - onnxruntime and tokenizers raise their own exception types
            raise ModelError(f"cannot load the ONNX export in {directory}: {type(exc).__name__}: {exc}") from None
        loaded = cls.from_parts(config, session, tokenizer, labels=meta["labels"], max_length=meta["max_length"],
                                uses_text_pairs=meta["uses_text_pairs"], pad_token_id=meta.get("pad_token_id"),
                                truncation_side=meta.get("truncation_side", "right"), training_arguments=args,
                                temperature=float(meta.get("temperature", 1.0)), head_tokens=meta.get("head_tokens"),
                                multi_label=bool(meta.get("multi_label")), windows=meta.get("windows"))
        if rescore_session is not None:
            loaded._rescore_session, loaded._rescore_below = rescore_session, float(rescore["margin_below"])
        # the other workers' sessions are opened on the first call with more than one batch
        loaded._session_path = directory / meta["onnx_file"]
        loaded._workers, loaded._worker_threads = workers, per_worker
        loaded._info.update(precision=meta["precision"], threads=threads, workers=workers,
                            batch_size=loaded._batch_size,
                            rescore_margin_below=loaded._rescore_below or None)
        return loaded

    @classmethod
    def from_parts(cls, config: ModelConfig, session, tokenizer, *, labels, max_length: int, uses_text_pairs: bool,
                   pad_token_id: int | None, truncation_side: str = "right",
                   training_arguments: OnnxEncoderArguments | None = None,
                   temperature: float = 1.0, head_tokens: int | None = None,
                   multi_label: bool = False, windows: dict[str, int] | None = None) -> OnnxEncoderClassifier:
        """A classifier around an open session and a ``tokenizers.Tokenizer`` (used by the export's own check)."""
        import onnxruntime as ort

        from models.hf_common.training import available_cores

        model = cls(config, training_arguments)
        model.labels = [str(label) for label in labels]
        model._max_length = int(max_length)
        model._uses_pairs = bool(uses_text_pairs)
        model._pad_id = int(pad_token_id or 0)
        if not temperature > 0:
            raise ModelError(f"the export's temperature must be > 0, found {temperature!r}; re-run `cli export-model`.")
        model._temperature = float(temperature)
        model._multi_label = multi_label  # a sigmoid per label instead of the softmax
        args = model.training_arguments
        model._batch_size = args.layout(available_cores())[2]
        tokenizer.no_padding()
        model._head_tokens = head_tokens
        model._cutter = None
        if (head_tokens is not None or windows) and not uses_text_pairs:  # cut after tokenizing, as the HF model
            from tokenizers import Tokenizer

            model._cutter = Tokenizer.from_str(tokenizer.to_str())
            model._cutter.no_truncation()
        if windows and not uses_text_pairs:
            model._windows = Windows(rust_offsets(model._cutter), model._max_length, windows["overlap"],
                                     windows["max_windows"])
        tokenizer.enable_truncation(model._max_length, direction=truncation_side)
        model._tokenizer, model._sessions = tokenizer, [session]
        model._input_names = [node.name for node in session.get_inputs()]
        model._info = {"device": "cpu", "runtime": f"onnxruntime {ort.__version__}", "max_length": model._max_length,
                       "truncated": {"predict": 0}}
        if model._temperature != 1.0:
            model._info["temperature"] = model._temperature
        return model

    def _encode_all(self, data: TextDataset) -> tuple[list[list[int]], list[list[int]]]:
        texts = [str(text) for text in data.texts]
        if data.text_pairs is not None:
            encodings = self._tokenizer.encode_batch(list(zip(texts, map(str, data.text_pairs), strict=True)))
        elif self._head_tokens is not None:
            whole = self._cutter.encode_batch(texts)
            self._info["truncated"]["predict"] += sum(len(e.ids) > self._max_length for e in whole)
            return ([head_tail_cut(e.ids, self._max_length, self._head_tokens) for e in whole],
                    [head_tail_cut(e.type_ids, self._max_length, self._head_tokens) for e in whole])
        else:
            encodings = self._tokenizer.encode_batch(texts)
        self._info["truncated"]["predict"] += sum(1 for encoding in encodings if encoding.overflowing)
        return [encoding.ids for encoding in encodings], [encoding.type_ids for encoding in encodings]

    def predict_proba(self, data: TextDataset) -> np.ndarray:
        if not self._sessions:
            raise ModelError("the ONNX model is not loaded: call load() first.")
        if (data.text_pairs is not None) != self._uses_pairs:
            trained = "sentence pairs" if self._uses_pairs else "single texts"
            raise ModelError(f"the model was trained on {trained}; pass the same text columns as in training.")
        if self._windows is None or not len(data):
            return self._predict_rows(data)
        texts, owner, cut = self._windows.split(list(data.texts))  # as the HF model splits and pools
        self._info["truncated"]["predict"] += cut
        return self._windows.pool(self._predict_rows(TextDataset(texts)), owner, len(data),
                                  kind="sigmoid" if self._multi_label else "softmax")

    def _predict_rows(self, data: TextDataset) -> np.ndarray:
        out = np.empty((len(data), len(self.labels)), dtype=np.float64)
        if len(data) == 0:
            return out
        ids, type_ids = self._encode_all(data)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        batches = self._batches(lengths, np.arange(len(ids)), self._batch_size)
        sessions = self._worker_sessions() if len(batches) > 1 else self._sessions[:1]
        if len(sessions) == 1:
            for batch in batches:
                self._score(sessions[0], ids, type_ids, lengths, batch, out)
        else:
            pending: queue.SimpleQueue = queue.SimpleQueue()
            for batch in batches:  # longest first, so the workers finish close together
                pending.put(batch)

            def work(session) -> None:
                while True:
                    try:
                        batch = pending.get_nowait()
                    except queue.Empty:
                        return
                    self._score(session, ids, type_ids, lengths, batch, out)

            pool = self._worker_pool(len(sessions))  # onnxruntime releases the GIL in run()
            for result in [pool.submit(work, session) for session in sessions]:
                result.result()
        if self._rescore_session is not None:
            top = np.partition(out, -2, axis=1) if out.shape[1] > 1 else np.ones((len(out), 2))
            uncertain = np.flatnonzero(top[:, -1] - top[:, -2] < self._rescore_below)
            # small batches too: the few uncertain rows span many lengths (batches of 64 ran at half the rows/s)
            for batch in self._batches(lengths, uncertain, self._batch_size):
                self._score(self._rescore_session, ids, type_ids, lengths, batch, out)
            self._info["rescored_rows"] = self._info.get("rescored_rows", 0) + len(uncertain)
        return out

    def _worker_pool(self, size: int) -> ThreadPoolExecutor:
        """The threads that drive the worker sessions, kept across calls (a server makes many small ones)."""
        if self._pool is None:  # sized for every session this model may open
            self._pool = ThreadPoolExecutor(max(size, self._workers), thread_name_prefix="onnx-worker")
        return self._pool

    def _worker_sessions(self) -> list:
        try:
            while self._session_path is not None and len(self._sessions) < self._workers:
                self._sessions.append(open_session(self._session_path, self._worker_threads))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(f"cannot open another ONNX Runtime session for {self._session_path} "
                             f"({type(exc).__name__}: {exc}); to use one session, set \"workers\": 1 in "
                             "model_config.training_arguments of the export's mlops_model.json.") from None
        return self._sessions

    @staticmethod
    def _batches(lengths: np.ndarray, rows: np.ndarray, size: int) -> list[np.ndarray]:
        """``rows`` sorted longest first and cut into batches of at most ``size`` (each padded to its first row),
        cut where padding would cost more than another call."""
        return padding_aware_batches(lengths, rows, size, CALL_COST_TOKENS)

    def _score(self, session, ids, type_ids, lengths: np.ndarray, batch: np.ndarray, out: np.ndarray) -> None:
        """Probabilities of the rows in ``batch`` into ``out``, padded to the batch's longest row."""
        width = int(lengths[batch].max())
        feed = {
            "input_ids": np.full((len(batch), width), self._pad_id, dtype=np.int64),
            "attention_mask": np.zeros((len(batch), width), dtype=np.int64),
            "token_type_ids": np.zeros((len(batch), width), dtype=np.int64),
        }
        for i, row in enumerate(batch):
            n = lengths[row]
            feed["input_ids"][i, :n] = ids[row]
            feed["attention_mask"][i, :n] = 1
            feed["token_type_ids"][i, :n] = type_ids[row]
        logits = session.run(None, {name: feed[name] for name in self._input_names})[0].astype(np.float64)
        if self._multi_label:
            out[batch] = 1.0 / (1.0 + np.exp(-logits))
            return
        if self._temperature != 1.0:
            logits /= self._temperature
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        out[batch] = logits / logits.sum(axis=1, keepdims=True)

    def runtime_info(self) -> dict[str, Any]:
        info = dict(self._info)
        info["truncated"] = dict(self._info.get("truncated", {}))
        return info
