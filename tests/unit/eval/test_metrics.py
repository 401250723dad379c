"""The rules classification_metrics adds around scikit-learn: every class counted (absent ones too), the
positive class by name, AUROC None where undefined and a macro AUROC over present classes, JSON output."""

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from usfmae.eval.metrics import binary_auroc, classification_metrics, format_table


def _random_task(num_classes: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, num_classes, size=n)
    # Scores correlated with the truth so AUROC is far from 0.5 and ties are rare but present.
    logits = rng.normal(size=(n, num_classes))
    logits[np.arange(n), y_true] += 1.0
    logits = np.round(logits, 1)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y_pred = probs.argmax(axis=1)
    return y_true, y_pred, probs


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_passes_the_named_positive_class(seed):
    y_true, y_pred, probs = _random_task(2, 300, seed)
    m = classification_metrics(y_true, y_pred, 2, class_names=["benign", "malignant"],
                               positive_class="malignant", y_score=probs)
    assert m["binary"]["positive_class"] == "malignant"
    assert m["binary"]["precision"] == pytest.approx(skm.precision_score(y_true, y_pred, pos_label=1))
    assert m["binary"]["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, pos_label=1))
    assert m["binary"]["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, pos_label=1))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y_true, probs[:, 1]))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist()


def test_binary_positive_class_zero_and_1d_scores():
    y_true, y_pred, probs = _random_task(2, 200, 5)
    m = classification_metrics(y_true, y_pred, 2, positive_class=0, y_score=probs)
    assert m["binary"]["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, pos_label=0))
    # Score of class 0 ranks class-0 samples: same AUROC as sklearn with the labels flipped.
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y_true == 0, probs[:, 0]))
    m1 = classification_metrics(y_true, y_pred, 2, y_score=probs[:, 1])
    assert m1["auroc"] == pytest.approx(skm.roc_auc_score(y_true, probs[:, 1]))


@pytest.mark.parametrize("seed", [0, 1])
def test_eight_class_averages_over_every_class(seed):
    y_true, y_pred, probs = _random_task(8, 500, seed)
    m = classification_metrics(y_true, y_pred, 8, y_score=probs)
    labels = list(range(8))
    for average in ("macro", "micro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0)
        assert m[average]["precision"] == pytest.approx(p)
        assert m[average]["recall"] == pytest.approx(r)
        assert m[average]["f1"] == pytest.approx(f)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for c in labels:
        entry = m["per_class"][str(c)]
        assert (entry["precision"], entry["recall"], entry["f1"]) == pytest.approx((p[c], r[c], f[c]))
        assert entry["support"] == s[c]
        assert entry["auroc"] == pytest.approx(skm.roc_auc_score(y_true == c, probs[:, c]))
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro"))
    assert "binary" not in m
    # Micro P = R = F1 = accuracy for single-label multi-class: the MMOTU rows of Table 2.
    assert m["micro"]["precision"] == pytest.approx(m["accuracy"])
    assert m["micro"]["f1"] == pytest.approx(m["micro"]["recall"])


def test_zero_division_gives_zero():
    # Class 2 is never predicted and never true; class 1 is predicted but never true.
    y_true = np.array([0, 0, 0, 3, 3])
    y_pred = np.array([0, 1, 1, 3, 0])
    m = classification_metrics(y_true, y_pred, 4)
    assert m["per_class"]["2"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["per_class"]["1"]["precision"] == 0.0
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=[0, 1, 2, 3], average=average, zero_division=0)
        assert (m[average]["precision"], m[average]["recall"], m[average]["f1"]) == pytest.approx((p, r, f))


def test_auroc_ties_and_undefined():
    assert binary_auroc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.5, 0.5])) == pytest.approx(0.5)
    assert binary_auroc(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3])) is None
    # A class absent from y_true has no one-vs-rest curve: reported as None, skipped in the mean.
    y_true = np.array([0, 1, 0, 1, 0, 1])
    probs = np.tile([0.5, 0.3, 0.2], (6, 1))
    m = classification_metrics(y_true, y_true, 3, y_score=probs)
    assert m["per_class"]["2"]["auroc"] is None
    assert m["auroc"] == pytest.approx(0.5)


def test_hand_computed_binary_figures():
    # 6 samples, positive "m" (index 1): TP 2, FP 1, FN 1, TN 2.
    y_true, y_pred = [1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0]
    m = classification_metrics(y_true, y_pred, 2, class_names=["b", "m"], positive_class="m",
                               y_score=[0.9, 0.8, 0.4, 0.7, 0.2, 0.1])
    assert m["binary"] == {"positive_class": "m", "precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                           "f1": pytest.approx(2 / 3)}
    assert m["accuracy"] == pytest.approx(4 / 6) and m["confusion_matrix"] == [[2, 1], [1, 2]]
    assert m["auroc"] == pytest.approx(8 / 9)  # 8 of the 9 (positive, negative) pairs ranked right
    assert m["per_class"]["b"]["support"] == 3 and type(m["per_class"]["b"]["f1"]) is float


def test_output_is_json_serialisable_and_table_prints():
    y_true, y_pred, probs = _random_task(2, 50, 3)
    m = classification_metrics(y_true, y_pred, 2, class_names=["GIST", "leiomyoma"],
                                positive_class="GIST", y_score=probs)
    assert json.loads(json.dumps(m)) == m
    table = format_table(m)
    assert "binary (GIST)" in table and "leiomyoma" in table and "auroc" in table
    assert f"{m['macro']['f1']:.4f}" in table


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(y_true=[0, 1, 2], y_pred=[0, 1, 1], num_classes=2), "outside"),
        (dict(y_true=[0, 1], y_pred=[0], num_classes=2), "samples"),
        (dict(y_true=[], y_pred=[], num_classes=2), "zero samples"),
        (dict(y_true=[0.5, 1], y_pred=[0, 1], num_classes=2), "integer"),
        (dict(y_true=[0, 1], y_pred=[0, 1], num_classes=2, positive_class="cat"), "positive_class"),
        (dict(y_true=[0, 1, 2], y_pred=[0, 1, 2], num_classes=3, positive_class=1), "binary"),
        (dict(y_true=[0, 1], y_pred=[0, 1], num_classes=2, class_names=["a"]), "class names"),
        (dict(y_true=[0, 1, 2], y_pred=[0, 1, 2], num_classes=3, y_score=np.ones((3, 2))), "y_score"),
    ],
)
def test_bad_input_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(**kwargs)
