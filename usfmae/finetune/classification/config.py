"""Fine-tuning configuration (classification): model, data, protocol, optimisation, regularisation."""

from typing import Literal

from pydantic import Field, model_validator

from ...data.labelled import AUGMENTATIONS
from ..config import FinetuneBase
from ..registry import DOWNSTREAM, MODELS


class FinetuneConfig(FinetuneBase):
    """Classification fine-tuning; the fields it shares with segmentation are in FinetuneBase."""

    # ------------------------------------------------------------------ run
    output_dir: str = Field("runs/finetune", description="Where metrics, tables, figures and models are written.")

    # ------------------------------------------------------------------ model
    model: Literal[tuple(MODELS)] = Field("usfmae", description=(
        "'usfmae' = ViT encoder from a pretraining checkpoint (`checkpoint`); or a baseline built by timm: "
        "vgg19, resnet50, vit_base_patch16_224 (weights from a local file, never downloaded); or small_cnn, "
        "a 4-stage CNN trained from scratch (usfmae.finetune.classification.small_cnn; no checkpoint)."))
    random_init: bool = Field(False, description=(
        "usfmae only: build the checkpoint's architecture (the preset and overrides its file records) without "
        "loading its weights: the random-init control of a pretrained encoder. The encoder starts from the MAE's "
        "own init (xavier linears, sin-cos position embeddings), as pretraining step 0 does."))
    global_pool: Literal["token", "avg"] = Field("avg", description=(
        "ViT head on the cls token or on the mean of patch tokens (MAE's fine-tuning recipe)."))

    # ------------------------------------------------------------------ data
    data: str | None = Field(None, description=(
        "A folder with one sub-folder per class, or a CSV with header path,label[,fold|split]."))
    data_root: str | None = Field(None, description="Folder that relative CSV paths start from (default: the CSV's).")
    dataset: Literal[tuple(DOWNSTREAM)] | None = Field(None, description=(
        "Known downstream dataset: names it in Table 2, fixes its class order and positive class, and with "
        "`raw` runs its adapter on the official layout first."))
    raw: str | None = Field(None, description="Official layout of `dataset` to adapt into <output_dir>/<dataset>.csv.")

    # ------------------------------------------------------------------ protocol
    protocol: Literal["auto", "kfold", "split", "holdout"] = Field("auto", description=(
        "auto: official folds when the CSV has a fold column, its split when it has a split column, else a "
        "stratified hold-out. kfold: official folds or, without a fold column, stratified `folds`-fold. "
        "split: the CSV's train/val split column. holdout: one stratified hold-out of `val_fraction`."))
    folds: int = Field(5, ge=2, description="Folds of the stratified k-fold (when the data has no fold column).")
    positive_class: str | None = Field(None, description=(
        "Positive class of binary tasks (default: the dataset's, else the second class)."))

    # ------------------------------------------------------------------ optimisation
    epochs: int = Field(20, gt=0, description="Training epochs per fold.")
    batch_size: int = Field(32, gt=0, description="Images per batch per process (global = batch_size x processes).")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate (AdamW, linear warmup then half-cycle cosine).")
    layer_decay: float | None = Field(0.75, gt=0, le=1, description=(
        "Layer-wise lr decay for ViTs: block i of n gets lr x decay^(n - i) (None = off; CNNs never use it)."))
    patience: int | None = Field(None, gt=0, description="Early stopping: epochs without a better validation F1.")
    select_on: Literal["f1", "macro_f1"] = Field("f1", description=(
        "Validation F1 that picks each fold's best epoch and drives early stopping. f1: the Table 2 figure "
        "(binary F1 of the positive class; micro F1 with more classes), as the paper. macro_f1: the mean of "
        "the per-class F1s, which an epoch predicting one class for every image cannot win (binary F1 gives "
        "calling everything positive 2p/(1+p): 0.667 on a balanced set)."))

    # ------------------------------------------------------------------ regularisation
    augment: Literal[AUGMENTATIONS] = Field("paper", description=(
        "Training augmentation. paper: rotation 0-90 deg, flips, RandomResizedCrop scale (0.5, 2.0); light: "
        "flips and a mild crop (scale 0.8-1), for tiny images whose lesions a strong crop would cut away."))
    drop_path: float = Field(0.1, ge=0, lt=1, description="Stochastic depth rate.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing.")
    mixup: float = Field(0.0, ge=0, description="Mixup alpha (0 = off).")
    cutmix: float = Field(0.0, ge=0, description="CutMix alpha (0 = off).")
    mixup_prob: float = Field(1.0, ge=0, le=1, description="Probability of mixing a batch when mixup/cutmix is on.")
    class_weighted: bool = Field(False, description="Weight the loss by inverse class frequency of the training set.")

    # ------------------------------------------------------------------ outputs and loading
    save_model: bool = Field(True, description="Save each fold's best weights (best_model.pt).")
    num_workers: int = Field(2, ge=0, description="DataLoader workers per process.")

    @model_validator(mode="after")
    def _check(self) -> "FinetuneConfig":
        if self.raw is not None and self.dataset is None:
            raise ValueError(f"raw needs dataset (one of {', '.join(DOWNSTREAM)}) to pick the adapter")
        if self.raw is not None and self.data is not None:
            raise ValueError("give either data (an adapted CSV or folder) or raw (with dataset), not both")
        return self

    @property
    def mixing(self) -> bool:
        """True when batches are mixed (mixup or CutMix): the loss then takes soft targets."""
        return self.mixup > 0 or self.cutmix > 0
