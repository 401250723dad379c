"""Evaluation protocols: k-fold splits and a runner that aggregates metrics across folds.

BUS-BRA ships its own 5-fold partition and MMOTU-2D a train/val split (use ``folds_from_column``);
GIST514-DB states none, so the project uses a seeded stratified 5-fold (``stratified_kfold``).
``run_folds`` calls the caller's train-and-evaluate function once per fold, seeds each fold, and
reports the per-fold metrics plus mean and standard deviation of every scalar among them.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold


@dataclass(frozen=True)
class FoldSpec:
    """One fold: indices into the dataset and the seed its run uses."""

    name: str
    train_idx: np.ndarray
    val_idx: np.ndarray
    seed: int


def stratified_kfold(labels: Sequence, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's StratifiedKFold (shuffled with ``seed``): class proportions kept within one sample.

    Every sample is in exactly one validation fold, each class's count differs by at most 1 between
    folds, and fold sizes differ by at most 1. A class with fewer than k samples is simply absent from
    some validation folds (scikit-learn's warning about it is silenced: that is expected here).
    Returns [(train_idx, val_idx)] * k, each a sorted int64 array.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    if k > n:
        raise ValueError(f"cannot make {k} folds from {n} samples")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(n), labels)
        return [(train.astype(np.int64), val.astype(np.int64)) for train, val in splits]


def stratified_group_kfold(labels: Sequence, groups: Sequence, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's StratifiedGroupKFold (shuffled with ``seed``): every group (patient, video, near-duplicate
    set) lies in one fold only, class proportions kept as far as the groups allow.

    Returns [(train_idx, val_idx)] * k, each a sorted int64 array; fewer groups than k is an error.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if labels.shape != groups.shape:
        raise ValueError(f"got {labels.size} labels but {groups.size} group ids")
    n_groups = np.unique(groups).size
    if k < 2 or k > n_groups:
        raise ValueError(f"cannot make {k} group-aware folds from {n_groups} groups (need 2 <= k <= groups)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(labels.size), labels,
                                                                                           groups)
        return [(np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)) for train, val in splits]


def stratified_subset(labels: Sequence, fraction: float, seed: int, min_per_class: int = 1) -> np.ndarray:
    """Sorted indices of a class-stratified fraction of the samples (label-efficiency runs).

    Each class keeps round(fraction * count) samples, at least min_per_class (and at most all).
    Each class's order is a seeded permutation independent of `fraction`, so for one seed the
    subsets are nested: the 1% subset is inside the 10% subset, which is inside 100%.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = []
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        n = min(members.size, max(min_per_class, int(round(fraction * members.size))))
        keep.append(members[:n])
    return np.sort(np.concatenate(keep)).astype(np.int64)


def folds_from_column(fold_values: Sequence) -> list[tuple[np.ndarray, np.ndarray]]:
    """Official folds: one (train_idx, val_idx) per distinct value, in sorted value order.

    fold_values: [N] fold id of each sample (e.g. BUS-BRA's kFold 1..5); fold f validates on the
    samples whose value is f and trains on all others.
    """
    values = np.asarray(fold_values)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"fold_values must be a non-empty 1-D sequence, got shape {values.shape}")
    distinct = np.unique(values)
    if distinct.size < 2:
        raise ValueError(f"need at least two distinct fold values, got {distinct.tolist()}")
    all_idx = np.arange(values.size)
    return [(all_idx[values != v], all_idx[values == v]) for v in distinct]


def make_fold_specs(splits: Iterable[tuple[np.ndarray, np.ndarray]], base_seed: int = 0,
                    names: Sequence[str] | None = None) -> list[FoldSpec]:
    """Name the splits (fold1, fold2, ... unless given) and give fold i the seed base_seed + i."""
    splits = list(splits)
    names = list(names) if names is not None else [f"fold{i + 1}" for i in range(len(splits))]
    if len(names) != len(splits):
        raise ValueError(f"got {len(names)} names for {len(splits)} folds")
    return [
        FoldSpec(name=name, train_idx=np.asarray(train, dtype=np.int64),
                 val_idx=np.asarray(val, dtype=np.int64), seed=base_seed + i)
        for i, (name, (train, val)) in enumerate(zip(names, splits))
    ]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a fold's run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def flatten_scalars(metrics: dict, prefix: str = "") -> dict[str, float]:
    """{"macro": {"f1": 0.8}} -> {"macro.f1": 0.8}; lists, strings, None and bools are skipped."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_scalars(value, prefix=f"{name}."))
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            flat[name] = float(value)
    return flat


def run_folds(fold_specs: Sequence[FoldSpec | tuple[np.ndarray, np.ndarray]],
              train_eval_fn: Callable[[FoldSpec], dict], base_seed: int = 0) -> dict:
    """Run train_eval_fn(spec) -> metrics dict on each fold; aggregate every scalar metric.

    Plain (train_idx, val_idx) pairs are wrapped with seeds base_seed + i. Each fold is seeded
    with seed_everything(spec.seed) before its call. The std is the sample standard deviation
    across folds (n - 1 denominator; 0 for a single fold). A metric missing or None in some folds
    is aggregated over the folds that have it; ``count`` says how many.
    Returns {"num_folds", "seeds", "folds": [{name, seed, n_train, n_val, metrics}],
    "mean": {key: float}, "std": {key: float}, "count": {key: int}}.
    """
    specs = [
        spec if isinstance(spec, FoldSpec)
        else FoldSpec(f"fold{i + 1}", np.asarray(spec[0], dtype=np.int64), np.asarray(spec[1], dtype=np.int64),
                      base_seed + i)
        for i, spec in enumerate(fold_specs)
    ]
    if not specs:
        raise ValueError("run_folds needs at least one fold")
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"fold names must be unique, got {names}")

    # Step 1: one run per fold, each from a known seed.
    folds = []
    for spec in specs:
        seed_everything(spec.seed)
        metrics = train_eval_fn(spec)
        if not isinstance(metrics, dict):
            raise TypeError(f"train_eval_fn must return a dict of metrics, got {type(metrics).__name__} "
                            f"for {spec.name}")
        folds.append({"name": spec.name, "seed": spec.seed, "n_train": int(spec.train_idx.size),
                      "n_val": int(spec.val_idx.size), "metrics": metrics})

    # Step 2: mean and std of each scalar over the folds that report it.
    per_key: dict[str, list[float]] = {}
    for fold in folds:
        for key, value in flatten_scalars(fold["metrics"]).items():
            per_key.setdefault(key, []).append(value)
    mean = {key: float(np.mean(values)) for key, values in per_key.items()}
    std = {key: float(np.std(values, ddof=1)) if len(values) > 1 else 0.0 for key, values in per_key.items()}
    return {
        "num_folds": len(folds),
        "seeds": [spec.seed for spec in specs],
        "folds": folds,
        "mean": mean,
        "std": std,
        "count": {key: len(values) for key, values in per_key.items()},
    }
