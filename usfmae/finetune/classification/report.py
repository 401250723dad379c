"""Report downstream results as the paper does: Table 2 in Markdown and confusion-matrix figures.

Table 2 has one row per model and precision / recall / F1 per dataset, in percent. Which average
fills a cell follows the paper (README "Reproducing Table 2"): the positive class's figures for binary tasks,
micro averages for multi-class ones (MMOTU-2D, where P = R = F1). A cell takes either one
``classification_metrics`` result or a ``run_folds`` result, shown as mean ± std across folds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..registry import DOWNSTREAM

# Display names of the adapters' dataset keys; other keys are shown as given.
DATASET_TITLES = {name: dataset.title for name, dataset in DOWNSTREAM.items()}
STAT_TITLES = ("Prec.", "Rec.", "F1")


def _is_fold_result(metrics: dict) -> bool:
    return "mean" in metrics and "std" in metrics and "folds" in metrics


def _first_fold_metrics(metrics: dict) -> dict:
    """The metrics dict of one run (the first fold's for a run_folds result)."""
    return metrics["folds"][0]["metrics"] if _is_fold_result(metrics) else metrics


def table_keys(metrics: dict) -> tuple[str, str, str]:
    """Dotted keys of Table 2's cells: binary.* for 2-class results, micro.* otherwise."""
    average = "binary" if "binary" in _first_fold_metrics(metrics) else "micro"
    return (f"{average}.precision", f"{average}.recall", f"{average}.f1")


def _lookup(metrics: dict, dotted: str):
    value = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _cell(metrics: dict | None, key: str, scale: float, decimals: int) -> str:
    """'81.3' for one run, '81.3 ± 2.1' for folds, '–' when the figure is absent."""
    if metrics is None:
        return "–"
    if _is_fold_result(metrics):
        mean, std = metrics["mean"].get(key), metrics["std"].get(key)
        if mean is None:
            return "–"
        return f"{mean * scale:.{decimals}f} ± {std * scale:.{decimals}f}"
    value = _lookup(metrics, key)
    return "–" if value is None else f"{value * scale:.{decimals}f}"


def _average_note(title: str, metrics: dict, keys: Sequence[str]) -> str:
    average = keys[0].split(".")[0]
    if average == "binary":
        positive = _lookup(_first_fold_metrics(metrics), "binary.positive_class")
        return f"{title}: positive class {positive}"
    return f"{title}: {average} average"


def table2_markdown(results: dict[str, dict[str, dict]], metric_keys: Sequence[str] | None = None,
                    percent: bool = True, decimals: int = 1, datasets: Sequence[str] | None = None) -> str:
    """Markdown table: models as rows, for each dataset Prec. / Rec. / F1 columns.

    results: {model: {dataset: metrics}}, metrics from classification_metrics or run_folds.
    metric_keys: three dotted keys to use for every dataset (e.g. macro.precision, macro.recall,
    macro.f1); by default each dataset gets table_keys() of its first result. A footnote says
    which average each dataset's columns hold. datasets: column order (default: first seen).
    """
    if metric_keys is not None and len(metric_keys) != 3:
        raise ValueError(f"metric_keys must name precision, recall and F1 keys, got {list(metric_keys)}")
    seen: list[str] = []
    for per_dataset in results.values():
        seen.extend(d for d in per_dataset if d not in seen)
    if datasets is not None and set(datasets) != set(seen):
        raise ValueError(f"datasets {list(datasets)} do not match the results' {seen}")
    datasets = list(datasets) if datasets is not None else seen
    if not datasets:
        raise ValueError("no results to tabulate")

    # Step 1: which figures each dataset's three columns show.
    keys, notes = {}, []
    for dataset in datasets:
        first = next(per[dataset] for per in results.values() if dataset in per)
        keys[dataset] = tuple(metric_keys) if metric_keys is not None else table_keys(first)
        notes.append(_average_note(DATASET_TITLES.get(dataset, dataset), first, keys[dataset]))

    # Step 2: header, then one row per model.
    header = ["Model"] + [f"{DATASET_TITLES.get(d, d)} {stat}" for d in datasets for stat in STAT_TITLES]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|"]
    scale = 100.0 if percent else 1.0
    for model, per_dataset in results.items():
        cells = [_cell(per_dataset.get(d), key, scale, decimals) for d in datasets for key in keys[d]]
        lines.append("| " + " | ".join([model] + cells) + " |")
    unit = "%" if percent else "fraction"
    lines.append("")
    lines.append(f"Values in {unit}. " + "; ".join(notes) + ".")
    return "\n".join(lines)


def save_confusion_png(cm, class_names: Sequence[str], path: str | Path, title: str | None = None) -> Path:
    """Draw a confusion matrix (rows true, columns predicted) with counts in each cell.

    Cells are shaded by the row-normalised fraction so rare classes stay readable. Uses
    matplotlib's object API (Agg), leaving pyplot's global state alone.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion matrix of shape {cm.shape} does not match {len(class_names)} class names")
    rows = cm.sum(axis=1, keepdims=True)
    fraction = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows != 0)

    n = cm.shape[0]
    side = max(3.5, 0.8 * n + 2.0)
    figure = Figure(figsize=(side, side), dpi=120)
    axes = figure.add_subplot()
    image = axes.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of true class")
    for i in range(n):
        for j in range(n):
            axes.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                      color="white" if fraction[i, j] > 0.5 else "black", fontsize=9)
    axes.set_xticks(range(n), labels=list(class_names), rotation=45 if n > 2 else 0, ha="right" if n > 2 else "center")
    axes.set_yticks(range(n), labels=list(class_names))
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    if title:
        axes.set_title(title)
    figure.tight_layout()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
