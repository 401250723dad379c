"""Table 2 in Markdown and confusion-matrix figures."""

import numpy as np
import pytest
from PIL import Image

from usfmae.eval.folds import run_folds
from usfmae.eval.metrics import classification_metrics
from usfmae.finetune.classification.report import save_confusion_png, table2_markdown, table_keys


def _binary(seed, names=("benign", "malignant"), positive="malignant"):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    p = np.where(rng.random(60) < 0.8, y, 1 - y)
    return classification_metrics(y, p, 2, class_names=list(names), positive_class=positive)


def _eight_class(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, 100)
    p = np.where(rng.random(100) < 0.7, y, rng.integers(0, 8, 100))
    return classification_metrics(y, p, 8)


def _table_rows(markdown):
    return [line for line in markdown.splitlines() if line.startswith("| ")]


def test_table2_layout_and_averages():
    busbra, mmotu = _binary(0), _eight_class(1)
    results = {"USF-MAE": {"busbra": busbra, "mmotu": mmotu}, "ResNet-50": {"mmotu": _eight_class(2)}}
    markdown = table2_markdown(results)
    header, usf, resnet = _table_rows(markdown)
    assert header == ("| Model | BUS-BRA Prec. | BUS-BRA Rec. | BUS-BRA F1 | "
                      "MMOTU-2D Prec. | MMOTU-2D Rec. | MMOTU-2D F1 |")
    cells = [c.strip() for c in usf.strip("|").split("|")]
    assert cells[0] == "USF-MAE"
    # Binary columns hold the positive class; multi-class columns the micro average (P = R = F1).
    assert cells[1:4] == [f"{100 * busbra['binary'][k]:.1f}" for k in ("precision", "recall", "f1")]
    assert cells[4] == cells[5] == cells[6] == f"{100 * mmotu['micro']['f1']:.1f}"
    assert resnet.split("|")[2:5] == [" – "] * 3  # no BUS-BRA result for this model
    assert "BUS-BRA: positive class malignant; MMOTU-2D: micro average" in markdown
    assert table_keys(busbra) == ("binary.precision", "binary.recall", "binary.f1")


def test_table2_fold_results_show_mean_and_std():
    folds = run_folds([([1], [0]), ([0], [1])], lambda spec: _binary(spec.seed, ("GIST", "leiomyoma"), "GIST"))
    markdown = table2_markdown({"ViT-B": {"gist514": folds}})
    cells = [c.strip() for c in _table_rows(markdown)[1].strip("|").split("|")]
    mean, std = folds["mean"]["binary.f1"], folds["std"]["binary.f1"]
    assert cells[3] == f"{100 * mean:.1f} ± {100 * std:.1f}"
    assert "GIST514-DB: positive class GIST" in markdown


def test_table2_explicit_keys_and_errors():
    markdown = table2_markdown({"m": {"busbra": _binary(3)}}, metric_keys=("macro.precision", "macro.recall",
                                                                          "macro.f1"), percent=False, decimals=3)
    assert f"{_binary(3)['macro']['f1']:.3f}" in _table_rows(markdown)[1]
    assert "macro average" in markdown
    with pytest.raises(ValueError, match="precision, recall and F1"):
        table2_markdown({"m": {"busbra": _binary(3)}}, metric_keys=("macro.f1",))
    with pytest.raises(ValueError, match="no results"):
        table2_markdown({"m": {}})


def test_save_confusion_png(tmp_path):
    cm = [[5, 1, 0], [2, 7, 1], [0, 0, 0]]
    path = save_confusion_png(cm, ["chocolate cyst", "teratoma", "normal ovary"], tmp_path / "figs" / "cm.png",
                              title="MMOTU-2D")
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 100
        # Not blank: the shaded cells and text make many distinct colours.
        assert len(image.convert("RGB").getcolors(maxcolors=100000)) > 20
    with pytest.raises(ValueError, match="does not match 2 class names"):
        save_confusion_png(cm, ["a", "b"], tmp_path / "bad.png")
