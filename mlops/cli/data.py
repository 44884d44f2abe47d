"""The data side: audit (which rows to look at), data-generate (an LLM writes labelled rows) and pseudo-label
(clusters label rows)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from mlops.cli.console import build_application, cell, emit, err, out
from mlops.cli.options import (AllowExternal, ArtifactsDir, DEFAULT_ARTIFACTS, Device, Encoding, ExperimentId, Force,
                               ModelConfigNames, OutputFormat, TargetColumn, TextColumn)
from mlops.core.choices import NearDuplicates

commands = typer.Typer()


class RankByOption(str, Enum):
    self_confidence = "self_confidence"
    normalized_margin = "normalized_margin"


@commands.command("audit")
def audit(
    experiment_id: ExperimentId,
    model_config_name: ModelConfigNames,
    near_duplicates: Annotated[list[NearDuplicates], typer.Option(
        "--near-duplicates", help="minhash (character shingles), embedding (MiniLM cosine, finds paraphrases; "
                                  "slower) or off; repeatable.")] = [NearDuplicates.minhash],  # noqa: B006
    jaccard_threshold: Annotated[float, typer.Option("--jaccard-threshold", min=0.05, max=1.0,
                                                     help="minhash: estimated Jaccard from which texts pair.")] = 0.8,
    cosine_threshold: Annotated[float, typer.Option("--cosine-threshold", min=-1.0, max=1.0,
                                                    help="embedding: cosine similarity from which texts pair.")] = 0.9,
    rank_by: Annotated[RankByOption, typer.Option(
        "--rank-by", help="Order of the flagged rows: p(given label), or its margin over the best other label.")
    ] = RankByOption.self_confidence,
    outliers: Annotated[bool, typer.Option("--outliers/--no-outliers",
                                           help="Flag texts far from every training neighbour.")] = True,
    retrain_without_flagged: Annotated[bool, typer.Option(
        "--retrain-without-flagged", help="Backtest each config again, each fold without the rows an inner audit of its "
                                          "own train and val rows flags (its test rows and the hold-out decide "
                                          "nothing and are never trained on); the fold-paired difference, tested.")
    ] = False,
    top_k: Annotated[Optional[int], typer.Option(
        "--top-k", min=1, help="With --retrain-without-flagged: remove only the highest-ranked rows, the same share "
                               "of each fold's rows as k is of the train-val rows.")] = None,
    force: Force = False,
    device: Device = None,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="table for people; json for scripts.")] = OutputFormat.table,
    artifacts_dir: ArtifactsDir = DEFAULT_ARTIFACTS,
) -> None:
    """Rows to look at: likely label errors (confident learning on out-of-fold probabilities), near-duplicates
    across splits and odd rows; several --model-config-name combine their probabilities."""
    import sys

    from mlops.audit.service import AuditSettings, command_line

    methods = tuple(dict.fromkeys(m.value for m in near_duplicates if m is not NearDuplicates.off))
    settings = AuditSettings(
        model_config_names=list(dict.fromkeys(model_config_name)), near_duplicates=methods,
        jaccard_threshold=jaccard_threshold, cosine_threshold=cosine_threshold, rank_by=rank_by.value,
        outliers=outliers, retrain_without_flagged=retrain_without_flagged, top_k=top_k, force=force,
        command=command_line(["audit", *sys.argv[2:]] if len(sys.argv) > 1 and sys.argv[1] == "audit" else ["audit"]),
    )
    result = build_application(artifacts_dir, device).audit(experiment_id, settings)
    summary = result.summary
    if fmt is OutputFormat.json:
        import json

        out.print_json(json.dumps(summary, default=str))
        return
    issues = summary["label_issues"]
    out.print(f"Label audit ({summary['probabilities']}, out-of-fold): {issues['flagged']} of "
              f"{issues['rows_audited']} train-val rows flagged as likely label errors.")
    emit([{**row, "estimated_noise": cell(row["estimated_noise"])} for row in issues["by_class"]], OutputFormat.table,
         "estimated wrong labels per given label", ["label", "rows", "estimated_wrong", "estimated_noise", "flagged"])
    top = result.label_issues.head(10)
    if len(top):
        emit(top.to_dict("records"), OutputFormat.table, "top flagged rows",
             ["rank", "row_id", "given_label", "suggested_label", "score", "fold", "text"])
    if summary["holdout_label_issues"]:
        h = summary["holdout_label_issues"]
        out.print(f"Hold-out ({', '.join(h['models'])}'s estimate): {h['flagged']} of {h['rows_audited']} rows "
                  f"flagged. Note: {h['fix']}.")
    nd = summary["near_duplicates"]
    if nd["methods"]:
        out.print(f"Near-duplicates ({', '.join(nd['methods'])}): {nd['pairs']} pairs; {nd['straddling_holdout']} "
                  f"straddle the hold-out and train-val, {nd['straddling_folds']} straddle folds, "
                  f"{nd['labels_disagree']} have different labels.")
        if nd["straddling_holdout"] and nd["grouped_by_splits"] == "off":
            out.print("  To keep them on one side: `cli generate-splits ... --near-duplicates minhash --force`.")
    odd = summary["odd_rows"]
    out.print(f"Odd rows: {odd['rows']} ({', '.join(f'{k}: {v}' for k, v in odd['by_reason'].items()) or 'none'}).")
    for entry in odd["small_classes"]:
        out.print(f"  [yellow]class {entry['label']!r}[/] has {min(entry['fold_test_rows'])} rows in a fold's test "
                  f"set (under {odd['min_class_test_rows']}): its per-fold scores are noise.")
    for name, r in (summary.get("retrain") or {}).items():
        out.print(f"Retrained {name} without the rows an inner audit of each fold's own train and val rows flags "
                  f"({r['rows_removed_mean']:.0f} per fold): macro-F1 {r['diff_mean']:+.4f} on the same test rows "
                  f"(95% CI {r['ci_low']:+.4f} to {r['ci_high']:+.4f}, corrected t-test p = {r['p_value']:.3f}).")
    for note in result.notes:
        out.print(f"[yellow]note:[/] {note}")
    out.print(f"Wrote {result.directory} (label_issues.csv, near_duplicates.csv, odd_rows.csv, audit.json).")


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
