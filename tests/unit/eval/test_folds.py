"""Fold protocols: stratified k-fold, official folds, and the fold runner's aggregation."""

import json
import warnings

import numpy as np
import pytest
import torch
from sklearn.model_selection import StratifiedKFold

from usfmae.eval.folds import (
    FoldSpec,
    flatten_scalars,
    folds_from_column,
    make_fold_specs,
    run_folds,
    stratified_kfold,
)


def _imbalanced_labels(seed=0):
    rng = np.random.default_rng(seed)
    # GIST514-like (251 / 263) plus a rare third class to stress the balancing.
    labels = np.array([0] * 251 + [1] * 263 + [2] * 7)
    return rng.permutation(labels)


@pytest.mark.parametrize("k", [2, 5, 7])
def test_every_sample_in_exactly_one_val_fold(k):
    labels = _imbalanced_labels()
    splits = stratified_kfold(labels, k=k, seed=3)
    assert len(splits) == k
    seen = np.concatenate([val for _, val in splits])
    assert np.array_equal(np.sort(seen), np.arange(labels.size))
    for train, val in splits:
        assert np.intersect1d(train, val).size == 0
        assert train.size + val.size == labels.size


def test_class_proportions_balanced_within_one():
    labels = _imbalanced_labels()
    ours = stratified_kfold(labels, k=5, seed=0)
    theirs = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=0).split(np.zeros(labels.size), labels))
    for splits in (ours, theirs):
        sizes = [val.size for _, val in splits]
        assert max(sizes) - min(sizes) <= 1
    for c in np.unique(labels):
        ours_counts = [np.sum(labels[val] == c) for _, val in ours]
        theirs_counts = [np.sum(labels[val] == c) for _, val in theirs]
        assert max(ours_counts) - min(ours_counts) <= 1
        # Same per-class fold counts as sklearn, up to the order of the folds.
        assert sorted(ours_counts) == sorted(theirs_counts)


def test_a_class_rarer_than_k_is_expected_not_warned_about():
    labels = np.array([0] * 20 + [1] * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's "least populated class" warning would fail here
        splits = stratified_kfold(labels, 5, seed=0)
    assert sorted(int(np.sum(labels[val] == 1)) for _, val in splits) == [0, 0, 0, 1, 1]
    assert all(val.dtype == np.int64 and np.array_equal(val, np.sort(val)) for _, val in splits)


def test_seed_changes_assignment_and_is_reproducible():
    labels = _imbalanced_labels()
    a = stratified_kfold(labels, 5, seed=1)
    b = stratified_kfold(labels, 5, seed=1)
    c = stratified_kfold(labels, 5, seed=2)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_stratified_kfold_rejects_bad_k():
    with pytest.raises(ValueError, match="at least 2"):
        stratified_kfold([0, 1, 0, 1], k=1, seed=0)
    with pytest.raises(ValueError, match="cannot make 5 folds from 3"):
        stratified_kfold([0, 1, 0], k=5, seed=0)


def test_folds_from_column_official_partition():
    fold_values = [1, 2, 3, 1, 2, 3, 3]
    splits = folds_from_column(fold_values)
    assert [val.tolist() for _, val in splits] == [[0, 3], [1, 4], [2, 5, 6]]
    assert splits[0][0].tolist() == [1, 2, 4, 5, 6]
    splits = folds_from_column(["train", "val", "train"])
    assert [val.tolist() for _, val in splits] == [[0, 2], [1]]
    with pytest.raises(ValueError, match="two distinct"):
        folds_from_column([1, 1, 1])


def test_run_folds_mean_std_and_seeds():
    splits = stratified_kfold([0, 1] * 10, k=4, seed=0)
    specs = make_fold_specs(splits, base_seed=100)
    f1_values = [0.5, 0.6, 0.7, 0.8]
    calls = []

    def train_eval(spec: FoldSpec):
        i = int(spec.name.removeprefix("fold")) - 1
        calls.append((spec.name, spec.seed, torch.rand(1).item()))
        auroc = None if i == 0 else 0.9
        return {"macro": {"f1": f1_values[i], "precision": 1.0}, "auroc": auroc,
                "class_names": ["a", "b"], "confusion_matrix": [[1, 0], [0, 1]], "num_samples": 5}

    result = run_folds(specs, train_eval)
    assert result["seeds"] == [100, 101, 102, 103]
    assert [f["seed"] for f in result["folds"]] == [100, 101, 102, 103]
    assert result["mean"]["macro.f1"] == pytest.approx(np.mean(f1_values))
    assert result["std"]["macro.f1"] == pytest.approx(np.std(f1_values, ddof=1))
    assert result["std"]["macro.precision"] == 0.0
    # AUROC undefined in fold 1: aggregated over the three folds that have it.
    assert result["count"]["auroc"] == 3 and result["mean"]["auroc"] == pytest.approx(0.9)
    assert "class_names" not in result["mean"] and "confusion_matrix" not in result["mean"]
    assert [f["n_val"] for f in result["folds"]] == [s[1].size for s in splits]
    json.dumps(result)

    # Seeding makes each fold's random stream repeatable.
    first = [c[2] for c in calls]
    calls.clear()
    run_folds(specs, train_eval)
    assert [c[2] for c in calls] == first


def test_run_folds_accepts_plain_pairs_and_checks_return_type():
    splits = folds_from_column([1, 2, 1, 2])
    result = run_folds(splits, lambda spec: {"acc": float(spec.val_idx.size)}, base_seed=7)
    assert result["seeds"] == [7, 8]
    assert [f["name"] for f in result["folds"]] == ["fold1", "fold2"]
    with pytest.raises(TypeError, match="fold1"):
        run_folds(splits, lambda spec: 0.5)


def test_flatten_scalars_skips_non_scalars():
    flat = flatten_scalars({"a": 1, "b": {"c": 2.5, "d": [1, 2]}, "e": "x", "f": None, "g": True,
                            "h": np.float32(0.25)})
    assert flat == {"a": 1.0, "b.c": 2.5, "h": 0.25}
