"""Downstream fine-tuning: classification/ (Table 2) and segmentation/ (lesion masks), with what they share
beside them (dataset adapters, the pretrained encoder, distributed setup, the common config fields).

The names below are the package's public surface (launch/finetune.py and the benchmarks use them).
"""

from ..data.labelled import CsvDataset, FolderDataset, LabelledImages, transforms_for
from ..eval.folds import FoldSpec, run_folds, stratified_group_kfold, stratified_kfold, stratified_subset
from ..eval.metrics import classification_metrics, format_table
from ..eval.probe import extract_features, knn_eval, linear_probe, monitor_knn
from .adapters import ADAPTERS, BusbraImage, adapt_busbra, adapt_gist514, adapt_mmotu, read_busbra
from .classification.baselines import BASELINES, build_baseline
from .classification.config import FinetuneConfig
from .classification.models import build_classifier
from .classification.outputs import table2_from_runs
from .classification.protocol import open_labelled, plan_folds
from .classification.report import save_confusion_png, table2_markdown
from .classification.run import run_finetune
from .classification.train import RunResult, evaluate, headline_f1, train_one
from .distributed import DistEnv, init_distributed, shutdown
from .encoder import build_vit_classifier
from .labelled_folder import FolderImage, adapt_labelled_folder, scan_labelled_folder
from .segmentation.config import SegmentationConfig
from .segmentation.run import run_segmentation

__all__ = [
    "ADAPTERS", "BASELINES", "BusbraImage", "CsvDataset", "DistEnv", "FinetuneConfig", "FoldSpec", "FolderDataset",
    "FolderImage", "LabelledImages", "RunResult", "SegmentationConfig", "adapt_busbra", "adapt_gist514",
    "adapt_labelled_folder", "adapt_mmotu", "read_busbra", "scan_labelled_folder",
    "build_baseline", "build_classifier", "build_vit_classifier", "classification_metrics", "evaluate",
    "extract_features", "format_table", "headline_f1", "init_distributed", "knn_eval", "linear_probe",
    "monitor_knn", "open_labelled", "plan_folds", "run_finetune", "run_folds", "run_segmentation",
    "save_confusion_png", "shutdown", "stratified_group_kfold", "stratified_kfold", "stratified_subset", "table2_from_runs",
    "table2_markdown", "train_one", "transforms_for",
]
