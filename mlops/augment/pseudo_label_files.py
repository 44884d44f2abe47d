"""``cli pseudo-label`` around ``mlops.augment.pseudo_label``: reading the rows, choosing the encoder, writing the output.

Labelled rows come from ``--labelled-file``; without it, the input's rows that have a value in ``--target-column``
are the labelled rows and the others the unlabelled pool. The encoder is a model folder from
``train-final-model`` (a Hugging Face encoder classifier: its encoder embeds, and the classifier adds its own
label and confidence to each output row) or a pretrained encoder (a folder or hub id; those two columns stay
empty). The output is written in one atomic step, so it is either complete or absent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops.augment.pseudo_label import Embed, PseudoLabels, PseudoLabelSettings, pseudo_label
from mlops.core.errors import DataError, ExperimentError, ModelError
from mlops.core.io import check_writable_directory, ensure_directory, write_text_atomic
from mlops.core.model_folder import LoadedModel, is_model_folder, load_model
from mlops.core.text_dataset import TextDataset
from mlops.data.tables import (DEFAULT_MAX_TEXT_CHARS, check_text_columns, clip_texts, load_labelled_data, read_table,
                               require_columns, table_columns)

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("text", "label", "cluster", "purity", "n_labelled_in_cluster", "classifier_label",
                  "classifier_confidence")


@dataclass
class Encoder:
    """What embeds the texts, and the classifier it belongs to (None for a plain pretrained encoder)."""

    embed: Embed
    classifier: LoadedModel | None
    description: str


@dataclass
class PseudoLabelRows:
    """The labelled rows and the unlabelled pool (texts as read, and cut to the length the encoder sees)."""

    labelled: TextDataset
    pool: list[str]
    pool_for_model: list[str]
    labelled_source: str


@dataclass
class PseudoLabelSummary:
    output_file: Path
    encoder: str
    stats: dict[str, Any]


def _check_paths(input_file: Path, output_file: Path, labelled_file: Path | None, force: bool) -> None:
    for option, path in (("--input-file", input_file), ("--labelled-file", labelled_file)):
        if path is not None and not Path(path).is_file():
            raise DataError(f"{option} {path} does not exist or is not a file; check {option}.")
    output = Path(output_file)
    if any(path is not None and output.resolve() == Path(path).resolve() for path in (input_file, labelled_file)):
        raise ExperimentError("--output-file must differ from --input-file and --labelled-file; they would be "
                              "overwritten.")
    if output.exists() and not force:
        raise ExperimentError(f"{output} already exists; pass --force to overwrite it or choose --output-file.")
    check_writable_directory(output.parent, "--output-file")


def _texts(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip()


def read_pseudo_label_rows(input_file: Path, output_file: Path, *, labelled_file: Path | None = None,
                           text_column: str = "text", target_column: str = "label", encoding: str = "utf-8",
                           settings: PseudoLabelSettings = PseudoLabelSettings(), force: bool = False,
                           max_text_chars: int | None = DEFAULT_MAX_TEXT_CHARS) -> PseudoLabelRows:
    """Check the request and read its rows, before any (slow) model load; DataError for unusable input."""
    settings.validate()
    input_file = Path(input_file)
    _check_paths(input_file, output_file, labelled_file, force)
    columns = table_columns(input_file, encoding)
    if labelled_file is None and target_column not in columns:
        raise DataError(f"no labelled rows: --labelled-file was not given and {input_file} has no column "
                        f"{target_column!r} (columns found: {columns}). Pass --labelled-file with labelled rows, or "
                        "name the input's (partly filled) label column with --target-column.")
    require_columns(columns, {"--text-column": text_column}, input_file)
    check_text_columns(input_file, {"--text-column": text_column})
    wanted = list(dict.fromkeys([text_column] + ([target_column] if labelled_file is None else [])))
    raw = read_table(input_file, encoding, columns=wanted)
    if raw.empty:
        raise DataError(f"input file {input_file} has a header but no data rows.")
    texts = _texts(raw[text_column])
    usable = ~(texts.isna() | (texts == "")).to_numpy()
    if not usable.all():
        logger.warning("skipped %d rows of %s with an empty text", int((~usable).sum()), input_file.name)
    cut = clip_texts(texts, max_text_chars, f"texts of {input_file.name}")  # what the encoder sees
    if labelled_file is None:
        labels = _texts(raw[target_column])
        has_label = ~(labels.isna() | (labels == "")).to_numpy()
        labelled = TextDataset(cut[usable & has_label].tolist(), labels[usable & has_label].tolist())
        in_pool = usable & ~has_label
        source = f"the rows of {input_file.name} with a {target_column!r} value"
        if not in_pool.any():
            raise DataError(f"every row of {input_file} with a text has a {target_column!r} value, so there is "
                            "nothing to pseudo-label; leave the label empty on the unlabelled rows, or pass them "
                            "as --input-file and the labelled rows as --labelled-file.")
    else:
        data = load_labelled_data(Path(labelled_file), text_column=text_column, target_column=target_column,
                                  encoding=encoding, max_text_chars=max_text_chars)
        labelled = TextDataset(data.frame["text"].tolist(), data.frame["label"].tolist())
        in_pool = usable
        source = Path(labelled_file).name
        if not in_pool.any():
            raise DataError(f"no usable rows in {input_file}: every row has an empty text.")
    if len(labelled) == 0:
        raise DataError(f"no labelled rows in {source}; pass --labelled-file with labelled rows.")
    n_rows = len(labelled) + int(in_pool.sum())
    n_clusters = settings.clusters_for(n_rows, len(set(labelled.labels)))
    if n_rows < n_clusters:
        raise DataError(f"{n_clusters} clusters (--n-clusters) need at least as many rows, found {n_rows} "
                        f"({len(labelled)} labelled, {int(in_pool.sum())} unlabelled); lower --n-clusters.")
    return PseudoLabelRows(labelled=labelled, pool=texts[in_pool].tolist(), pool_for_model=cut[in_pool].tolist(),
                           labelled_source=source)


def load_encoder(model_path: str, *, device: str | None = None, batch_size: int = 64, pooling: str = "mean",
                 allow_external: bool = False) -> Encoder:
    """A model folder from train-final-model (an encoder classifier), else a pretrained encoder name or folder."""
    from models.hf_encoder.embedding import classifier_embedder, pretrained_embedder

    path = Path(str(model_path)).expanduser()
    if is_model_folder(path):
        from models.hf_encoder.model import HFEncoderClassifier

        loaded = load_model(path, runtime="torch", device=device, allow_external=allow_external)
        if loaded.task.multi_label:
            raise ModelError(f"{path} is a multi-label model; pseudo-labelling gives each row one label and does not "
                             "support label sets yet.")
        if not isinstance(loaded.model, HFEncoderClassifier):
            raise ModelError(f"{path} holds a {type(loaded.model).__name__} model, which has no encoder to embed "
                             "texts with; pass a Hugging Face encoder model folder (train-final-model with an "
                             "hf_encoder config such as minilm) or a pretrained encoder such as "
                             "sentence-transformers/all-MiniLM-L6-v2.")
        embedder = classifier_embedder(loaded.model, batch_size=batch_size, pooling=pooling)
        return Encoder(embedder, loaded, f"the encoder of the classifier in {path}")
    embedder = pretrained_embedder(str(model_path), device=device, batch_size=batch_size, pooling=pooling)
    return Encoder(embedder, None, f"the pretrained encoder {embedder.source}")


def output_frame(result: PseudoLabels, rows: PseudoLabelRows, encoder: Encoder) -> tuple[pd.DataFrame, float | None]:
    """The output rows, and the share of them where the classifier's own label is the pseudo label."""
    import pandas as pd

    frame = pd.DataFrame({
        "text": [rows.pool[i] for i in result.pool_index], "label": result.labels,
        "cluster": result.cluster, "purity": result.purity, "n_labelled_in_cluster": result.n_labelled,
        "classifier_label": pd.Series([pd.NA] * len(result.texts), dtype="string"),
        "classifier_confidence": np.full(len(result.texts), np.nan),
    }, columns=list(OUTPUT_COLUMNS))
    agreement = None
    if encoder.classifier is not None and len(frame):
        texts = [rows.pool_for_model[i] for i in result.pool_index]
        proba = encoder.classifier.predict_proba(TextDataset(texts))
        frame["classifier_label"] = np.asarray(encoder.classifier.labels, dtype=object)[proba.argmax(axis=1)]
        frame["classifier_confidence"] = proba.max(axis=1)
        agreement = float((frame["classifier_label"] == frame["label"]).mean())
    return frame, agreement


def write_pseudo_labels(encoder: Encoder, rows: PseudoLabelRows, output_file: Path,
                        settings: PseudoLabelSettings = PseudoLabelSettings()) -> PseudoLabelSummary:
    """Cluster, pseudo-label and write ``output_file`` atomically (complete or absent)."""
    logger.info("embedding with %s; labelled rows: %s", encoder.description, rows.labelled_source)
    result = pseudo_label(encoder.embed, rows.labelled, rows.pool_for_model, settings)
    frame, agreement = output_frame(result, rows, encoder)
    output_file = Path(output_file)
    ensure_directory(output_file.parent)
    write_text_atomic(output_file, frame.to_csv(index=False))
    stats = result.summary()
    if encoder.classifier is not None:
        stats["classifier_agreement"] = agreement
        if agreement is not None:
            logger.info("the classifier gives the pseudo label to %.1f%% of the rows written", 100 * agreement)
    logger.info("wrote %d pseudo-labelled rows to %s", len(frame), output_file)
    return PseudoLabelSummary(output_file=output_file, encoder=encoder.description, stats=stats)
