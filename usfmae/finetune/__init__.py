"""Downstream classification: datasets and adapters, protocols, fine-tuning, baselines, probes, reports."""

from ..data.labelled import CsvDataset, FolderDataset, LabelledImages, transforms_for
from ..eval.folds import FoldSpec, run_folds, stratified_kfold, stratified_subset
from ..eval.metrics import classification_metrics, format_table
from ..eval.probe import extract_features, knn_eval, linear_probe, monitor_knn
from .adapters import ADAPTERS, adapt_busbra, adapt_gist514, adapt_mmotu
from .baselines import BASELINES, build_baseline
from .config import FinetuneConfig
from .distributed import DistEnv, init_distributed, shutdown
from .encoder import build_classifier, build_vit_classifier
from .outputs import table2_from_runs
from .protocol import open_labelled, plan_folds
from .report import save_confusion_png, table2_markdown
from .run import run_finetune
from .train import RunResult, evaluate, headline_f1, train_one

__all__ = [
    "ADAPTERS", "BASELINES", "CsvDataset", "DistEnv", "FinetuneConfig", "FoldSpec", "FolderDataset",
    "LabelledImages", "RunResult", "adapt_busbra", "adapt_gist514", "adapt_mmotu", "build_baseline",
    "build_classifier", "build_vit_classifier", "classification_metrics", "evaluate", "extract_features",
    "format_table", "headline_f1", "init_distributed", "knn_eval", "linear_probe", "monitor_knn",
    "open_labelled", "plan_folds", "run_finetune", "run_folds", "save_confusion_png", "shutdown",
    "stratified_kfold", "stratified_subset", "table2_from_runs", "table2_markdown", "train_one",
    "transforms_for",
]
