"""The report's sections: the data, the model comparison, each model in detail, the final models."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mlops.core import plots
from mlops.evaluation.report.collect import ExperimentView, ModelView, RunView, confusion, per_class, reliability
from mlops.evaluation.report.document import Image, Section, Table, Text
from mlops.evaluation.report.multi_label import per_label_blocks

#: compare-models' JSON columns, with the headings the report gives them.
COMPARISON_COLUMNS = {"rank": "rank", "model": "model", "n_folds": "folds", "macro_f1_mean": "macro-F1 mean",
                      "macro_f1_std": "macro-F1 std", "accuracy_mean": "accuracy mean", "diff_mean": "diff vs baseline",
                      "diff_ci_low": "95% CI low", "diff_ci_high": "95% CI high", "p_value": "p (corrected t)",
                      "prob_better": "P(better)", "prob_rope": "P(equivalent)", "prob_worse": "P(worse)"}


def data_section(view: ExperimentView) -> Section:
    info = view.experiment.info
    sizes = info["split_sizes"]
    params = info["split_parameters"]
    counts = {str(k): int(v) for k, v in (info.get("class_counts") or info["label_counts"]).items()}
    multi = ("; multi-label: a row carries a set of labels (the counts below are rows with each label; "
             f"{info['rows_without_label']} rows have none), split by iterative stratification"
             if "label_counts" in info else "")
    section = Section("Data", [
        Text(f"{info['rows_used']} rows of {info['input_file']} (sha256 {info['input_sha256'][:12]}), "
             f"{len(view.labels)} labels{multi}; {info['rows_dropped_empty']} rows dropped for an empty text or label; "
             f"{info['rows_in_duplicate_or_group_clusters']} rows share a normalised text or group with another "
             "row and were kept on one side of every split."),
        Table(["label", "rows", "share"], [[label, n, n / info["rows_used"]] for label, n in counts.items()],
              "Label distribution"),
        Image("labels", plots.label_distribution(counts), "rows per label"),
    ])
    rows = [["global hold-out (test)", None, None, sizes["holdout_test"]]]
    rows += [[f"backtesting fold {k + 1}", f["train"], f["val"], f["test"]] for k, f in enumerate(sizes["backtesting"])]
    estimate = sizes["performance_estimation"]
    rows.append(["estimate (train-val -> hold-out)", estimate["train"], estimate["val"], estimate["test"]])
    rows.append(["final model", sizes["final_model"]["train"], sizes["final_model"]["val"], None])
    section.blocks.append(Table(["split", "train", "val", "test"], rows,
                                f"Splits ({params['backtesting_strategy']}, seed {params['seed']}, hold-out "
                                f"{params['test_size']:.0%})"))
    truncated = _truncation_rows(view)
    if truncated:
        section.blocks.append(Table(["model", "run", "long texts", "train texts cut", "val texts cut",
                                     "test texts cut"], truncated,
                                    "Texts longer than the model's max_length: cut (head: its first tokens; "
                                    "head_tail: its head and tail), or read in windows (cut: more windows than "
                                    "max_windows)"))
    return section


def _truncation_rows(view: ExperimentView) -> list[list[Any]]:
    rows = []
    for model in view.models:
        for run_name, run in (("backtesting", model.backtesting), ("hold-out", model.holdout)):
            if run is None:
                continue
            counts = [fold.get("runtime", {}).get("truncated") for fold in run.folds]
            if all(c is None for c in counts):
                continue
            total = {key: sum((c or {}).get(key, 0) for c in counts) for key in ("train", "validation", "predict")}
            strategy = run.folds[0].get("runtime", {}).get("truncation", "head")
            rows.append([model.name, run_name, strategy, total["train"], total["validation"], total["predict"]])
    return rows


def comparison_section(view: ExperimentView, comparison: list[dict[str, Any]] | None, note: str | None,
                       holdout: list[dict[str, Any]] | None) -> Section:
    section = Section("Model comparison")
    if comparison:
        columns = [c for c in COMPARISON_COLUMNS if any(c in row for row in comparison)]
        section.blocks.append(Table([COMPARISON_COLUMNS[c] for c in columns],
                                    [[row.get(c) for c in columns] for row in comparison],
                                    "Backtesting, ranked by mean macro-F1"))
        if note:
            section.blocks.append(Text(note, note=True))
        for row in comparison:
            if row.get("caveat"):
                section.blocks.append(Text(f"{row['model']}: {row['caveat']}.", note=True))
        scores = {row["model"]: row["macro_f1_per_fold"] for row in comparison}
        section.blocks.append(Image("fold_scores", plots.fold_scores(scores, "macro-F1"), "macro-F1 per fold"))
    else:
        section.blocks.append(Text("No model has finished backtesting yet (cli run-backtesting)."))
    if holdout:
        columns = [c for c in ("model", "n", "accuracy", "macro_f1", "log_loss", "diff_mean", "mcnemar_p_value")
                   if any(c in row for row in holdout)]
        section.blocks.append(Table(columns, [[row.get(c) for c in columns] for row in holdout],
                                    "Hold-out estimate (trained on train-val, scored once on the hold-out)"))
    return section


def _class_table(run: RunView, labels: list[str], caption: str) -> tuple[Table, np.ndarray]:
    matrix = confusion(run.predictions, len(labels))
    rows = [[r["class"], r["precision"], r["recall"], r["f1"], r["support"]] for r in per_class(matrix, labels)]
    return Table(["class", "precision", "recall", "F1", "support"], rows, caption), matrix


def _timing_rows(run: RunView) -> list[list[Any]]:
    rows = []
    for k, fold in enumerate(run.folds, 1):
        timings, sizes, runtime = fold.get("timings", {}), fold.get("rows", {}), fold.get("runtime", {})
        train_s, predict_s = timings.get("train_s"), timings.get("predict_s")
        samples = runtime.get("train_samples_per_second")
        if samples is None and train_s:
            samples = sizes.get("train", 0) / train_s
        rows.append([k, sizes.get("train"), train_s, samples, sizes.get("test"), predict_s,
                     sizes.get("test", 0) / predict_s if predict_s else None, runtime.get("device"),
                     runtime.get("precision")])
    return rows


def model_section(model: ModelView, labels: list[str]) -> list[Section]:
    sections = [Section(f"Model: {model.name}")]
    detail = sections[0].blocks
    curves = {}
    for run, name in ((model.backtesting, "backtesting (all folds' test rows)"), (model.holdout, "hold-out")):
        if run is not None and run.label_sets is not None:
            detail += per_label_blocks(model.name, run, labels, name)
        if run is None or run.predictions is None:
            continue
        table, matrix = _class_table(run, labels, f"Per class, {name}")
        detail += [table, Image(f"{model.name}_{name.split()[0].replace('-', '')}_confusion",
                                plots.confusion_matrices(matrix, labels, name.split(" (")[0]),
                                f"confusion matrices, {name}")]
        curve = reliability(run.predictions)
        if curve is not None:
            curves[name.split(" (")[0]] = curve
    if curves:
        detail.append(Image(f"{model.name}_reliability", plots.reliability_diagram(curves, f"{model.name}: calibration"),
                            "reliability diagram"))
        detail.append(Text("Expected calibration error (ECE): 15 equal-width confidence bins, the mean gap between "
                           "confidence and accuracy weighted by the rows in each bin; 0 is perfectly calibrated.",
                           note=True))
    if model.backtesting and any(model.backtesting.histories):
        best = [fold.get("runtime", {}).get("best_epoch") for fold in model.backtesting.folds]
        detail.append(Image(f"{model.name}_learning_curves",
                            plots.learning_curves(model.backtesting.histories, best, f"{model.name}: backtesting folds"),
                            "learning curves"))
    for run, name in ((model.backtesting, "backtesting"), (model.holdout, "hold-out")):
        if run is not None:
            detail.append(Table(["fold", "train rows", "train s", "train samples/s", "test rows", "predict s",
                                 "predict rows/s", "device", "precision"], _timing_rows(run), f"Timings, {name}"))
    return sections


def final_model_section(models: list[ModelView]) -> Section | None:
    finals = [m for m in models if m.final_manifest is not None]
    if not finals:
        return None
    section = Section("Final models")
    for model in finals:
        manifest = model.final_manifest
        environment = manifest.get("environment", {})
        packages = environment.get("packages", {})
        git = environment.get("git") or {}
        validation = manifest.get("validation_metrics") or {}
        rows = [["folder", str(model.final_dir)], ["created", manifest.get("created_at")],
                ["data sha256", manifest.get("input_sha256")], ["seed", manifest.get("seed")],
                ["config sha256", manifest.get("config_sha256")], ["rows", json.dumps(manifest.get("rows"))],
                ["validation accuracy (optimistic: early-stopping split)", validation.get("accuracy")],
                ["device / precision", f"{manifest.get('runtime', {}).get('device', '-')} / "
                                       f"{manifest.get('runtime', {}).get('precision', '-')}"],
                ["git commit", f"{git.get('commit', '-')[:12]}{' (uncommitted changes)' if git.get('dirty') else ''}"],
                ["python", environment.get("python")],
                ["packages", ", ".join(f"{k} {v}" for k, v in packages.items() if v)]]
        section.blocks.append(Table(["", model.name], rows, f"Final model {model.name}"))
        config = (model.final_descriptor or {}).get("model_config", {})
        section.blocks.append(Text(f"config: {json.dumps(config, sort_keys=True)[:2000]}", note=True))
    return section


def data_health_section(view: ExperimentView) -> Section | None:
    """What ``cli audit`` found: estimated label noise per class, the top flagged rows, near-duplicates across
    splits, odd rows, and the retraining test, with the command that produced them."""
    audit = view.audit
    if audit is None:
        return None
    s = audit.summary
    issues = s["label_issues"]
    section = Section("Data health", [Text(
        f"From `{s.get('command') or 'cli audit'}` ({s['created_at']}), on the out-of-fold probabilities of "
        f"{s['probabilities']}: {issues['flagged']} of {issues['rows_audited']} train-val rows flagged as likely "
        "label errors by confident learning. Look at them; a fixed label changes the input file, so re-split "
        "(generate-splits --force) and rerun the backtests after fixing.")])
    if not audit.current:
        section.blocks.append(Text("This audit was made on other data or split parameters than the experiment's "
                                   "current ones: rerun `cli audit --force`.", note=True))
    section.blocks.append(Table(
        ["given label", "rows", "estimated wrong", "estimated noise", "flagged"],
        [[r["label"], r["rows"], r["estimated_wrong"], r["estimated_noise"], r["flagged"]] for r in issues["by_class"]],
        "Estimated wrong labels per class (the calibrated confident joint)"))
    if audit.label_issues is not None and len(audit.label_issues):
        section.blocks.append(Table(
            ["rank", "row", "given", "suggested", "score", "fold", "text"],
            [[r.rank, r.row_id, r.given_label, r.suggested_label, r.score, r.fold, str(r.text)[:160]]
             for r in audit.label_issues.itertuples()], "Top flagged rows (label_issues.csv has them all)"))
    if s.get("holdout_label_issues"):
        h = s["holdout_label_issues"]
        section.blocks.append(Text(f"Hold-out, from the estimate-performance model: {h['flagged']} of "
                                   f"{h['rows_audited']} rows flagged (holdout_label_issues.csv)."))
    nd = s["near_duplicates"]
    if nd["methods"]:
        section.blocks.append(Text(
            f"Near-duplicates ({', '.join(nd['methods'])}): {nd['pairs']} pairs, {nd['straddling_holdout']} across "
            f"the hold-out and train-val, {nd['straddling_folds']} across folds, {nd['labels_disagree']} with "
            f"different labels; the splits group near-duplicates: {nd['grouped_by_splits']}."))
        across = audit.pairs[audit.pairs["straddles"] != "none"] if audit.pairs is not None else None
        if across is not None and len(across):
            section.blocks.append(Table(
                ["rows", "similarity", "splits", "labels", "text a", "text b"],
                [[f"{r.row_id_a}, {r.row_id_b}", r.similarity, f"{r.split_a} / {r.split_b}",
                  f"{r.label_a} / {r.label_b}", str(r.text_a)[:100], str(r.text_b)[:100]] for r in across.itertuples()],
                "Near-duplicate pairs across splits"))
    odd = s["odd_rows"]
    lines = [f"{reason}: {count}" for reason, count in odd["by_reason"].items()]
    lines += [f"class {c['label']!r} has {min(c['fold_test_rows'])} rows in a fold's test set (under "
              f"{odd['min_class_test_rows']}): its per-fold scores are noise" for c in odd["small_classes"]]
    section.blocks.append(Text("Odd rows (odd_rows.csv): " + ("; ".join(lines) if lines else "none") + "."))
    for name, r in (s.get("retrain") or {}).items():
        section.blocks.append(Text(
            f"Retrained {name} without the rows an inner audit of each fold's own train and val rows flags (about "
            f"{r['rows_removed_mean']:.0f} per fold): macro-F1 {r['diff_mean']:+.4f} on the same test rows (95% CI "
            f"{r['ci_low']:+.4f} to {r['ci_high']:+.4f}, corrected t-test p = {r['p_value']:.3f})."))
    return section


def labelling_section(view: ExperimentView) -> Section | None:
    """Would more labels help (cli learning-curve), and which strategy needs the fewest (cli active-learning-sim)."""
    if not view.learning_curves and not view.simulations:
        return None
    section = Section("Labels: learning curves and active learning", [])
    curves = {}
    for name, s in view.learning_curves.items():
        curves[name] = [(p["rows_mean"], p["macro_f1_mean"], p["macro_f1_min"], p["macro_f1_max"])
                        for p in s["per_fraction"]]
        d = s["doubling"]
        gain = "could not be fitted" if d["gain"] is None else f"{d['gain']:+.4f}" + (
            f" (95% interval {d['ci_low']:+.4f} to {d['ci_high']:+.4f})" if d["ci_low"] is not None else "")
        check = s.get("extrapolation_check")
        early = "sizes up to half the largest" if s.get("sizes") == "per_class" else "fractions up to 0.5"
        checked = (f"; fitted on {early} it predicted {check['predicted']:.4f} at the largest, measured "
                   f"{check['measured']:.4f}" if check else "")
        section.blocks.append(Text(f"{name}: doubling the labelled rows ({d['from_rows']:.0f} -> {d['to_rows']:.0f} "
                                   f"per fold) gives macro-F1 {gain} by the fitted a - b*n^-c{checked}. "
                                   f"From `cli learning-curve --model-config-name {name}`."))
    if curves:
        section.blocks.append(Image("learning_curves", plots.labelled_rows_curves(
            curves, "learning curves (mean over folds; shaded: fold min-max)"), "macro-F1 against labelled rows"))
    for name, s in view.simulations.items():
        rows = []
        for strategy, o in s["outcome"].items():
            stop = o["stop_hint"]
            rows.append([strategy, o["final_macro_f1"], o["final_labelled"], o["labels_to_reach_random_final"],
                         o["share_of_random_labels"], None if stop is None else stop["labelled"]])
        section.blocks.append(Table(["strategy", "final macro-F1", "labels", "labels to reach random's final",
                                     "share of random's labels", "stop hint (labels)"], rows,
                                    f"Active learning with {name} (`cli active-learning-sim`), mean over folds"))
        curves_al = {strategy: [(c["labelled_mean"], c["macro_f1_mean"], c["macro_f1_min"], c["macro_f1_max"])
                                for c in curve] for strategy, curve in s["curves"].items()}
        section.blocks.append(Image(f"active_learning_{name}", plots.labelled_rows_curves(
            curves_al, f"active learning with {name}"), "macro-F1 per round and strategy"))
    return section


def build(view: ExperimentView, comparison: list[dict[str, Any]] | None, note: str | None,
          holdout: list[dict[str, Any]] | None) -> list[Section]:
    sections = [data_section(view)]
    health = data_health_section(view)
    sections += ([health] if health else []) + [comparison_section(view, comparison, note, holdout)]
    for model in view.models:
        sections += model_section(model, view.labels)
    final = final_model_section(view.models)
    labelling = labelling_section(view)
    return sections + ([labelling] if labelling else []) + ([final] if final else [])
