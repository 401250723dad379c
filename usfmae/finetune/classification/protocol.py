"""Which data, which splits: open a labelled folder or CSV and plan the evaluation protocol's folds.

Protocols (FinetuneConfig.protocol):
- kfold: the CSV's own ``fold`` column when there is one (BUS-BRA's official 5 folds, the GIST514
  adapter's folds), else a seeded stratified k-fold; reported as mean and std over folds.
- split: the CSV's ``split`` column, ``train`` rows against ``val`` (or ``test``) rows (MMOTU-2D).
- holdout: one stratified hold-out of ``val_fraction`` (fold 1 of a stratified round(1/fraction)-fold).
With ``groups`` (a path,group CSV for a class-folder tree) kfold and holdout use stratified group folds instead.
- auto: kfold with a fold column, split with a split column, holdout otherwise.
Every fold gets the seed ``cfg.seed + i``; all of them are recorded in the run's metrics.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...data.labelled import CsvDataset, FolderDataset, LabelledImages
from ...eval.folds import FoldSpec, folds_from_column, make_fold_specs, stratified_group_kfold, stratified_kfold
from ..adapters import ADAPTERS
from ..labelled_folder import scan_labelled_folder
from ..registry import DOWNSTREAM
from .config import FinetuneConfig

VAL_SPLITS = ("val", "test")


def adapt_raw(cfg: FinetuneConfig, out_dir: str | Path) -> Path:
    """Run cfg.dataset's adapter on the official layout cfg.raw; returns <out_dir>/<dataset>.csv."""
    out_csv = Path(out_dir) / f"{cfg.dataset}.csv"
    if cfg.dataset == "gist514":  # the project's own folds: seeded and as many as cfg.folds
        return ADAPTERS["gist514"](cfg.raw, out_csv, seed=cfg.seed, k=cfg.folds)
    return ADAPTERS[cfg.dataset](cfg.raw, out_csv)


def open_labelled(data: str | Path, cfg: FinetuneConfig) -> LabelledImages:
    """Every labelled image of a class-folder tree or a path,label[,fold|split] CSV (no transform)."""
    path = Path(data)
    if path.is_dir():
        return FolderDataset(path)
    if path.suffix.lower() == ".csv":
        return CsvDataset(path, root=cfg.data_root, classes=DOWNSTREAM[cfg.dataset].classes if cfg.dataset else None)
    raise FileNotFoundError(f"--data {path}: expected a folder with one sub-folder per class or a .csv file")


def subset(data: LabelledImages, indices, transform) -> LabelledImages:
    """The samples at `indices` with their own transform, keeping the full class list."""
    return LabelledImages([data.samples[i] for i in indices], data.classes, transform)


def positive_class(cfg: FinetuneConfig, classes: list[str]) -> str | None:
    """The binary task's positive class: cfg's, else the dataset's, else the second class."""
    if len(classes) != 2:
        if cfg.positive_class is not None:
            raise ValueError(f"positive_class applies to binary tasks; this one has {len(classes)} classes")
        return None
    name = cfg.positive_class or (DOWNSTREAM[cfg.dataset].positive_class if cfg.dataset else None) or classes[1]
    if name not in classes:
        raise ValueError(f"positive_class {name!r} is not one of the classes {classes}")
    return name


def resolve_protocol(cfg: FinetuneConfig, data: LabelledImages) -> str:
    """cfg.protocol with 'auto' decided by the CSV's fold/split column."""
    column = getattr(data, "group_column", None)
    if cfg.protocol == "auto":
        return {"fold": "kfold", "split": "split"}.get(column, "holdout")
    if cfg.protocol == "split" and column != "split":
        raise ValueError(f"protocol 'split' needs a CSV with a split column; {_where(data)} has none")
    return cfg.protocol


def _where(data: LabelledImages) -> str:
    return str(getattr(data, "csv_path", None) or getattr(data, "root", "the data"))


def _official_split(data: LabelledImages) -> tuple[np.ndarray, np.ndarray]:
    groups = np.asarray(data.groups)
    unknown = sorted(set(groups) - {"train", *VAL_SPLITS})
    present = [name for name in VAL_SPLITS if name in set(groups)]
    if unknown or len(present) != 1 or "train" not in set(groups):
        raise ValueError(f"{_where(data)}: split column must hold 'train' and one of {VAL_SPLITS}; "
                         f"found {sorted(set(groups))}")
    idx = np.arange(groups.size)
    return idx[groups == "train"], idx[groups == present[0]]


def sample_groups(cfg: FinetuneConfig, data: LabelledImages) -> list[str] | None:
    """Each sample's group id from cfg.groups (a class-folder tree only), or None without a group CSV."""
    if cfg.groups is None:
        return None
    root = getattr(data, "root", None)
    if root is None:
        raise ValueError(f"groups={cfg.groups} applies to a class-folder tree; {_where(data)} is a CSV: give it a fold "
                         "column instead (usfmae.finetune.labelled_folder.adapt_labelled_folder writes one)")
    by_image = {r.image: r.group for r in scan_labelled_folder(root, cfg.groups, check_masks=False)}
    return [by_image[Path(path)] for path, _ in data.samples]


def plan_folds(cfg: FinetuneConfig, data: LabelledImages) -> tuple[str, list[FoldSpec]]:
    """(protocol description, fold specs with seeds cfg.seed + i) for data under cfg.protocol."""
    protocol = resolve_protocol(cfg, data)
    groups = sample_groups(cfg, data)
    if groups is not None and protocol in ("kfold", "holdout"):  # whole groups per fold
        k = cfg.folds if protocol == "kfold" else max(2, round(1 / cfg.val_fraction))
        splits = stratified_group_kfold(data.targets, groups, k, cfg.seed)
        if protocol == "kfold":
            return f"kfold-grouped-{k}", make_fold_specs(splits, cfg.seed)
        return f"holdout-grouped-{1 / k:.2f}", make_fold_specs(splits[:1], cfg.seed, ["holdout"])
    if protocol == "kfold" and getattr(data, "group_column", None) == "fold":
        values = np.asarray(data.groups)
        names = [f"fold{v}" for v in np.unique(values)]
        return "kfold-official", make_fold_specs(folds_from_column(values), cfg.seed, names)
    if protocol == "kfold":
        splits = stratified_kfold(data.targets, cfg.folds, cfg.seed)
        return f"kfold-stratified-{cfg.folds}", make_fold_specs(splits, cfg.seed)
    if protocol == "split":
        return "split", make_fold_specs([_official_split(data)], cfg.seed, ["split"])
    k = max(2, round(1 / cfg.val_fraction))
    return f"holdout-{1 / k:.2f}", make_fold_specs([stratified_kfold(data.targets, k, cfg.seed)[0]], cfg.seed,
                                                   ["holdout"])
