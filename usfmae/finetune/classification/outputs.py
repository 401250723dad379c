"""What a fine-tuning run leaves behind, and Table 2 assembled from several runs.

A run directory holds:
    metrics.json           the pooled metrics at the top level (per_class, macro, micro, weighted, binary,
                           auroc, confusion_matrix; pooled over the out-of-fold predictions for k-fold),
                           plus protocol, seeds, per-fold metrics (folds) and their mean / std
    table2.md              the run as one row of the paper's Table 2 (mean ± std over folds)
    confusion_matrix.png   pooled confusion matrix
    predictions.csv        path, label, fold, predicted class and softmax score per class, per image
    config.yaml            the resolved configuration
    <fold>/                history.json, best_model.pt and confusion_matrix.png per fold (k-fold only)
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable

import numpy as np

from ..registry import MODELS
from .report import DATASET_TITLES, save_confusion_png, table2_markdown

MODEL_TITLES = {name: model.title for name, model in MODELS.items()}
FOLD_KEYS = ("folds", "mean", "std", "count")


def table2_entry(summary: dict) -> dict:
    """A metrics.json as one Table 2 cell: the fold result (mean ± std) for k-fold, else the plain metrics."""
    if summary.get("num_folds", 1) > 1:
        return summary
    return {k: v for k, v in summary.items() if k not in FOLD_KEYS}


def run_table2(summary: dict) -> str:
    """Table 2 Markdown with this run as the only row."""
    title = MODEL_TITLES.get(summary["model"], summary["model"])
    return table2_markdown({title: {summary["dataset"]: table2_entry(summary)}})


def table2_from_runs(metrics_files: Iterable[str | Path]) -> str:
    """Table 2 from several runs' metrics.json: one row per model, one column group per dataset.

    Rows keep the paper's order (VGG-19, ResNet-50, ViT-B/16, USF-MAE) and datasets BUS-BRA,
    MMOTU-2D, GIST514-DB; other models and datasets follow. Two runs of the same model and dataset
    are an error (which one would the table show?).
    """
    results: dict[str, dict[str, dict]] = {}
    for path in metrics_files:
        summary = json.loads(Path(path).read_text())
        if "model" not in summary or "dataset" not in summary:
            raise ValueError(f"{path} is not a metrics.json written by launch/finetune.py (no model/dataset)")
        row = results.setdefault(MODEL_TITLES.get(summary["model"], summary["model"]), {})
        if summary["dataset"] in row:
            raise ValueError(f"{path}: a second run of {summary['model']} on {summary['dataset']}")
        row[summary["dataset"]] = table2_entry(summary)
    if not results:
        raise ValueError("no metrics.json given")
    model_rank = {title: i for i, title in enumerate(("VGG-19", "ResNet-50", "ViT-B/16", "USF-MAE"))}
    data_rank = {key: i for i, key in enumerate(DATASET_TITLES)}
    ordered = {title: results[title] for title in sorted(results, key=lambda t: model_rank.get(t, len(model_rank)))}
    datasets = sorted({d for row in results.values() for d in row}, key=lambda d: (data_rank.get(d, len(data_rank)), d))
    return table2_markdown(ordered, datasets=datasets)


def write_predictions(path: Path, samples: list[tuple[str, int]], classes: list[str],
                      rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> Path:
    """predictions.csv: one line per validation image of every fold (fold, index array, y, scores)."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", "fold", "predicted"] + [f"score_{c}" for c in classes])
        for fold, idx, y, scores in rows:
            for i, label, s in zip(idx, y, scores):
                writer.writerow([samples[i][0], classes[label], fold, classes[int(s.argmax())]]
                                + [f"{v:.6f}" for v in s])
    return path


def write_run(out_dir: Path, summary: dict, samples: list[tuple[str, int]],
              predictions: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> str:
    """Write metrics.json, table2.md, confusion_matrix.png(s) and predictions.csv; return table2 text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=1))
    table = run_table2(summary)
    (out_dir / "table2.md").write_text(table + "\n")
    classes = summary["class_names"]
    title = f"{MODEL_TITLES.get(summary['model'], summary['model'])} on {summary['dataset']} ({summary['protocol']})"
    save_confusion_png(summary["confusion_matrix"], classes, out_dir / "confusion_matrix.png", title=title)
    if summary.get("num_folds", 1) > 1:
        for fold in summary["folds"]:
            save_confusion_png(fold["metrics"]["confusion_matrix"], classes,
                               out_dir / fold["name"] / "confusion_matrix.png", title=f"{title}, {fold['name']}")
    write_predictions(out_dir / "predictions.csv", samples, classes, predictions)
    return table
