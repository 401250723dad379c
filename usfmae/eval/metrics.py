"""Classification metrics for the downstream tasks (paper §2.7, Table 2): scikit-learn's, as JSON.

The paper reports precision, recall and F1. Its 8-class MMOTU rows have precision = recall = F1,
which only micro-averaging gives; its binary rows are the figures of the positive class. We report
all of them (per class, macro, micro, weighted, binary), plus accuracy, support, AUROC when scores
are given, and the confusion matrix (rows = true class, columns = predicted class).

scikit-learn computes every figure, with ``zero_division=0`` (a ratio whose denominator is zero is 0)
and ``labels=range(num_classes)`` (macro averages include every class, even absent ones). What this
wrapper adds: input checks that name the argument, the positive class by name, AUROC None where it is
undefined (one class only) and a macro AUROC over the classes present (scikit-learn raises there), and a
result of plain Python (floats, ints, lists, dicts) that goes straight into JSON.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn import metrics as skm

AVERAGES = ("macro", "micro", "weighted")


def _as_labels(values, name: str, num_classes: int) -> np.ndarray:
    """Validate a 1-D array of integer class indices in [0, num_classes)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
        array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"{name} holds class indices outside [0, {num_classes}): "
            f"min {array.min()}, max {array.max()}"
        )
    return array.astype(np.int64)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts [C, C]: entry [i, j] is the number of samples of true class i predicted as j."""
    y_true = _as_labels(y_true, "y_true", num_classes)
    y_pred = _as_labels(y_pred, "y_pred", num_classes)
    return skm.confusion_matrix(y_true, y_pred, labels=list(range(num_classes)))


def binary_auroc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count one half); None when only one class is present, where the
    ROC curve is undefined."""
    is_positive = np.asarray(is_positive, dtype=bool)
    if is_positive.all() or not is_positive.any():
        return None
    return float(skm.roc_auc_score(is_positive, np.asarray(scores, dtype=np.float64)))


def _resolve_positive_class(positive_class, class_names: list[str]) -> int:
    """Positive class given by index or by name; defaults to index 1 like scikit-learn."""
    if positive_class is None:
        return 1
    if isinstance(positive_class, str):
        if positive_class not in class_names:
            raise ValueError(f"positive_class {positive_class!r} is not one of {class_names}")
        return class_names.index(positive_class)
    index = int(positive_class)
    if index not in (0, 1):
        raise ValueError(f"positive_class index must be 0 or 1 for a binary task, got {index}")
    return index


def _auroc(y_true: np.ndarray, y_score, num_classes: int, positive: int | None) -> tuple[float | None, list]:
    """Binary AUROC from positive-class scores, or one-vs-rest macro AUROC for C > 2.

    y_score: [N] (binary only: score of the positive class) or [N, C] (score per class).
    Returns (auroc, per-class one-vs-rest AUROC list; empty for binary). The macro average skips
    classes absent from y_true (scikit-learn raises there instead).
    """
    scores = np.asarray(y_score, dtype=np.float64)
    if scores.shape[0] != y_true.shape[0]:
        raise ValueError(f"y_score has {scores.shape[0]} rows but y_true has {y_true.shape[0]}")
    if num_classes == 2:
        if scores.ndim == 2:
            if scores.shape[1] != 2:
                raise ValueError(f"binary y_score must be [N] or [N, 2], got shape {scores.shape}")
            scores = scores[:, positive]
        elif scores.ndim != 1:
            raise ValueError(f"binary y_score must be [N] or [N, 2], got shape {scores.shape}")
        return binary_auroc(y_true == positive, scores), []
    if scores.ndim != 2 or scores.shape[1] != num_classes:
        raise ValueError(f"multi-class y_score must be [N, {num_classes}], got shape {scores.shape}")
    per_class = [binary_auroc(y_true == c, scores[:, c]) for c in range(num_classes)]
    defined = [value for value in per_class if value is not None]
    return (float(np.mean(defined)) if defined else None), per_class


def classification_metrics(
    y_true,
    y_pred,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    positive_class: int | str | None = None,
    y_score=None,
) -> dict:
    """Every figure the downstream report needs, as a JSON-ready dict.

    y_true, y_pred: [N] class indices. y_score: optional [N] positive-class scores (binary) or
    [N, C] per-class scores/probabilities. positive_class: index or name, binary tasks only
    (default 1). Keys: num_samples, accuracy, class_names, per_class{name: precision, recall, f1,
    support[, auroc]}, macro/micro/weighted{precision, recall, f1}, binary{positive_class,
    precision, recall, f1} (C == 2 only), auroc (when y_score given), confusion_matrix.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    y_true = _as_labels(y_true, "y_true", num_classes)
    y_pred = _as_labels(y_pred, "y_pred", num_classes)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} samples but y_pred has {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("cannot compute metrics on zero samples")
    names = [str(n) for n in class_names] if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for {num_classes} classes")

    # Step 1: per-class figures (zero where undefined), then the averages over every class.
    labels = list(range(num_classes))
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0)
    averages = {}
    for average in AVERAGES:
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                         zero_division=0)
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    result = {
        "num_samples": int(y_true.size),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "class_names": names,
        "per_class": {
            names[c]: {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c in range(num_classes)
        },
        **averages,
    }

    # Step 3: the positive class's figures for binary tasks (Table 2's binary rows).
    positive = None
    if num_classes == 2:
        positive = _resolve_positive_class(positive_class, names)
        result["binary"] = {
            "positive_class": names[positive],
            "precision": float(precision[positive]),
            "recall": float(recall[positive]),
            "f1": float(f1[positive]),
        }
    elif positive_class is not None:
        raise ValueError(f"positive_class only applies to binary tasks, got {num_classes} classes")

    # Step 4: threshold-free ranking quality when scores are given.
    if y_score is not None:
        result["auroc"], per_class_auroc = _auroc(y_true, y_score, num_classes, positive)
        for c, value in enumerate(per_class_auroc):
            result["per_class"][names[c]]["auroc"] = value

    result["confusion_matrix"] = cm.tolist()
    return result


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def format_table(metrics: dict) -> str:
    """Fixed-width text table of a classification_metrics() result, for logs and terminals."""
    names = metrics["class_names"]
    width = max(14, *(len(n) for n in names), len(f"binary ({metrics.get('binary', {}).get('positive_class', '')})"))
    has_auroc = "auroc" in metrics
    header = f"{'':<{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>8}"
    if has_auroc:
        header += f"  {'auroc':>9}"
    lines = [header, "-" * len(header)]

    def row(label, p, r, f, support="", auroc=None, show_auroc=False):
        line = f"{label:<{width}}  {_fmt(p):>9}  {_fmt(r):>9}  {_fmt(f):>9}  {support!s:>8}"
        if has_auroc and show_auroc:
            line += f"  {_fmt(auroc):>9}"
        return line

    for name in names:
        entry = metrics["per_class"][name]
        lines.append(row(name, entry["precision"], entry["recall"], entry["f1"], entry["support"],
                         entry.get("auroc"), show_auroc="auroc" in entry))
    lines.append("-" * len(header))
    total = metrics["num_samples"]
    for average in AVERAGES:
        entry = metrics[average]
        lines.append(row(f"{average} avg", entry["precision"], entry["recall"], entry["f1"], total))
    if "binary" in metrics:
        entry = metrics["binary"]
        lines.append(row(f"binary ({entry['positive_class']})", entry["precision"], entry["recall"], entry["f1"]))
    lines.append(f"{'accuracy':<{width}}  {'':>9}  {'':>9}  {_fmt(metrics['accuracy']):>9}  {total:>8}")
    if has_auroc:
        lines.append(f"{'auroc':<{width}}  {'':>9}  {'':>9}  {_fmt(metrics['auroc']):>9}")
    return "\n".join(lines)
