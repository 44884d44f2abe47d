"""More data: data-generate (an LLM writes labelled rows) and pseudo-label (clusters label rows)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mlops.cli.console import build_application, cell, emit, err, out
from mlops.cli.options import (AllowExternal, ArtifactsDir, DEFAULT_ARTIFACTS, Device, Encoding, OutputFormat,
                               TargetColumn, TextColumn)

commands = typer.Typer()


@commands.command("data-generate")
def data_generate(
    name: Annotated[str, typer.Option("--name", help="Name of the generated dataset (a plain name).")],
    examples_per_sentiment: Annotated[Optional[int], typer.Option("--examples-per-sentiment", min=1,
                                                                  help="Rows to generate per label.")] = None,
    distribution_from_file: Annotated[Optional[Path], typer.Option(
        "--distribution-from-file", help="Copy the label distribution of this labelled CSV.")] = None,
    total_examples: Annotated[Optional[int], typer.Option("--total-examples", min=1)] = None,
    labels: Annotated[Optional[list[str]], typer.Option("--labels", help="A label (repeatable); default: from "
                                                        "--distribution-from-file, else negative/neutral/positive.")] = None,
    lang: Annotated[str, typer.Option("--lang", help="Language code of the generated text.")] = "en",
    model: Annotated[Optional[str], typer.Option("--model", help="Hub id or local folder (default: offline Gemma 3 270M).")] = None,
    seed_examples: Annotated[Optional[Path], typer.Option("--seed-examples", help="Labelled CSV to draw few-shot examples from.")] = None,
    text_column: TextColumn = "text",
    target_column: TargetColumn = "label",
    domain: Annotated[str, typer.Option("--domain", help='e.g. "product reviews", "financial news".')] = "movie reviews",
    temperature: Annotated[float, typer.Option("--temperature", min=0.0)] = 0.9,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)] = 0.95,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=8)] = 64,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    verify_with: Annotated[Optional[Path], typer.Option("--verify-with", help="A trained model folder that scores label agreement.")] = None,
    filter_disagreeing: Annotated[bool, typer.Option("--filter-disagreeing", help="With --verify-with: drop rows it labels differently.")] = False,
    output_dir: Annotated[Optional[Path], typer.Option("--output-dir", file_okay=False, help="Default: <artifacts-dir>/generated")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing dataset of that name.")] = False,
    device: Device = None,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Synthetic labelled data from an instruction LLM with few-shot prompts, in any language."""
    from mlops.augment.synthetic import GenerationRequest
    from mlops.core.io import check_plain_name

    check_plain_name(name, "--name")
    request = GenerationRequest(
        name=name, output_dir=output_dir or artifacts_dir / "generated", examples_per_label=examples_per_sentiment,
        distribution_from_file=distribution_from_file, total_examples=total_examples, labels=labels, lang=lang,
        model=model, seed_examples=seed_examples, text_column=text_column, label_column=target_column,
        domain=domain, temperature=temperature, top_p=top_p, batch_size=batch_size, seed=seed, force=force,
        verify_with=verify_with, filter_disagreeing=filter_disagreeing, max_new_tokens=max_new_tokens, device=device,
    )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                  TimeElapsedColumn(), console=err, transient=True) as progress:
        task = progress.add_task("generate", total=None, note="")

        def on_progress(update) -> None:
            progress.update(task, total=update.requested, completed=update.produced,
                            note=f"{update.candidates} candidates, {update.rejected} rejected")

        report = build_application(artifacts_dir, device).generate_data(request, progress=on_progress)
    headers, rows = report.table()
    emit([dict(zip(headers, row, strict=True)) for row in rows], OutputFormat.table,
          f"{report.name}: {report.model} ({report.lang})", headers)
    for warning in report.warnings:
        out.print(f"[yellow]note:[/] {warning}")
    if report.verification is not None:
        v = report.verification
        out.print(f"Label agreement with {v.model_folder}: before filtering "
                  f"{cell(v.agreement_before_filtering)}, written rows {cell(v.agreement_written)}")
    if report.rows_per_minute:
        out.print(f"{report.rows_per_minute:.1f} rows/minute (model load {report.load_s:.0f}s excluded)")
    out.print(f"Wrote {report.produced} rows -> [bold]{report.output_csv}[/] (metadata: {report.metadata_json})")


class PoolingOption(str, Enum):
    mean = "mean"
    cls = "cls"


@commands.command("pseudo-label")
def pseudo_label(
    model_path: Annotated[str, typer.Option(
        "--model-path", help="A folder written by train-final-model (a Hugging Face encoder), or a pretrained "
                             "encoder: a folder or hub id such as sentence-transformers/all-MiniLM-L6-v2.")],
    input_file: Annotated[Path, typer.Option("--input-file", help="CSV/TSV/Parquet of texts to pseudo-label.")],
    output_file: Annotated[Path, typer.Option("--output-file", help="CSV of the pseudo-labelled rows.")],
    labelled_file: Annotated[Optional[Path], typer.Option(
        "--labelled-file", help="Labelled rows that measure each cluster's purity (default: the input's rows "
                                "that have a --target-column value).")] = None,
    text_column: TextColumn = "text",
    target_column: TargetColumn = "label",
    n_clusters: Annotated[Optional[int], typer.Option(
        "--n-clusters", help="k-means clusters (default: sqrt(rows / 2), at least one per label).")] = None,
    pca_components: Annotated[int, typer.Option(
        "--pca-components", help="PCA dimensions before clustering (capped by rows and dimensions); 0: no PCA.")] = 50,
    min_purity: Annotated[float, typer.Option(
        "--min-purity", help="Keep clusters whose labelled members share the majority label at least this often.")] = 0.9,
    min_labelled: Annotated[int, typer.Option(
        "--min-labelled", help="Clusters with fewer labelled members get no label.")] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts embedded at a time.")] = 64,
    pooling: Annotated[PoolingOption, typer.Option(
        "--pooling", help="mean of the last layer's token states, or the first (CLS) token's.")] = PoolingOption.mean,
    encoding: Encoding = "utf-8",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    device: Device = None,
    allow_external_models: AllowExternal = False,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Pseudo-label unlabelled texts from the pure clusters they share with labelled ones (encoder embeddings)."""
    from mlops.augment.pseudo_label import PseudoLabelSettings

    settings = PseudoLabelSettings(n_clusters=n_clusters, pca_components=pca_components, min_purity=min_purity,
                                   min_labelled=min_labelled, seed=seed)
    summary = build_application(artifacts_dir, device, allow_external_models).pseudo_label(
        model_path, input_file, output_file, labelled_file=labelled_file, text_column=text_column,
        target_column=target_column, settings=settings, batch_size=batch_size, pooling=pooling.value,
        encoding=encoding, force=force)
    stats = summary.stats
    purity = "n/a" if stats["mean_purity"] is None else f"{stats['mean_purity']:.3f}"
    out.print(f"Kept {stats['clusters_kept']} of {stats['clusters']} clusters (purity >= {stats['min_purity']:g}; "
              f"{stats['clusters_with_label']} had at least {stats['min_labelled']} labelled members), mean purity "
              f"{purity}: {stats['rows_written']} of {stats['pool_rows']} unlabelled rows -> "
              f"[bold]{summary.output_file}[/]  ({stats['label_counts']})", highlight=False, soft_wrap=True)
    if stats.get("classifier_agreement") is not None:
        out.print(f"The classifier gives the pseudo label to {stats['classifier_agreement']:.1%} of them.")
