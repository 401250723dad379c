"""Segmentation fine-tuning configuration: encoder, decoder, data and split, augmentation, optimisation."""

from typing import Literal

from pydantic import Field, model_validator

from ..config import FinetuneBase


class SegmentationConfig(FinetuneBase):
    """Segmentation fine-tuning; the fields it shares with classification are in FinetuneBase."""

    # ------------------------------------------------------------------ run
    output_dir: str = Field("runs/finetune_seg", description="Where metrics.json, history.json and masks/ are written.")

    # ------------------------------------------------------------------ model
    decoder_widths: list[int] = Field([128, 64, 32, 16], min_length=1, description=(
        "Channels of the decoder's upsampling stages, coarse to fine; each stage doubles the resolution and "
        "only the first log2(patch) widths are used (a ViT/16 needs 4 stages, a ViT/8 needs 3)."))
    freeze_encoder: bool = Field(False, description=(
        "Train the decoder only (a probe of the frozen encoder's features)."))
    drop_path: float = Field(0.0, ge=0, lt=1, description="Stochastic depth rate of the encoder.")

    # ------------------------------------------------------------------ data
    data: str | None = Field(None, description=(
        "Image/mask folder pairs: <data>/images/x.png with <data>/masks/x.png, BUS-BRA's official layout "
        "(BUSBRA/Images/bus_0001-l.png with BUSBRA/Masks/mask_0001-l.png), or a labelled folder with masks."))
    layout: Literal["auto", "pairs", "busbra", "classes"] = Field("auto", description=(
        "How `data` is laid out; auto = busbra when an Images/ + Masks/ pair (or BUSBRA/) is found, pairs with "
        "images/ + masks/, else classes: a labelled folder, <class>/x.png with x_mask.png beside it "
        "(usfmae.finetune.labelled_folder)."))
    val_data: str | None = Field(None, description=(
        "A separate validation set in the same layout (else a hold-out of `data`)."))
    fold: int | None = Field(None, ge=1, le=5, description=(
        "BUS-BRA only: validate on official fold k of 5-fold-cv.csv (kFold column), train on the others."))

    # ------------------------------------------------------------------ augmentation (image and mask together)
    augment: bool = Field(True, description="Joint geometric augmentation of training pairs.")
    crop_scale: tuple[float, float] = Field((0.6, 1.0), description="RandomResizedCrop area fraction range.")
    rotation: float = Field(15.0, ge=0, le=180, description="Random rotation in [-rotation, +rotation] degrees.")
    hflip: float = Field(0.5, ge=0, le=1, description="Horizontal flip probability.")
    vflip: float = Field(0.0, ge=0, le=1, description=(
        "Vertical flip probability (0 by default: it puts the transducer at the bottom of the image)."))

    # ------------------------------------------------------------------ optimisation
    epochs: int = Field(30, gt=0, description="Training epochs.")
    batch_size: int = Field(16, gt=0, description="Images per batch.")
    lr: float = Field(1e-3, gt=0, description=(
        "Peak learning rate of the decoder (AdamW, warmup then half-cycle cosine)."))
    encoder_lr_scale: float = Field(0.1, gt=0, le=1, description="Encoder learning rate = lr x encoder_lr_scale.")
    dice_weight: float = Field(1.0, ge=0, description="Weight of the soft Dice loss.")
    bce_weight: float = Field(1.0, ge=0, description="Weight of the binary cross-entropy loss.")
    threshold: float = Field(0.5, gt=0, lt=1, description="Foreground when the predicted probability is >= threshold.")

    # ------------------------------------------------------------------ outputs and loading
    save_masks: bool = Field(True, description=(
        "Write the best epoch's predicted masks (0/255 PNG, original size) to masks/."))
    save_model: bool = Field(False, description="Save the best epoch's weights (best_model.pt).")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")

    @model_validator(mode="after")
    def _check(self) -> "SegmentationConfig":
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if self.dice_weight == 0 and self.bce_weight == 0:
            raise ValueError("dice_weight and bce_weight are both 0: nothing to train")
        if self.fold is not None and self.val_data is not None:
            raise ValueError("give either fold (BUS-BRA's official folds) or val_data, not both")
        return self
