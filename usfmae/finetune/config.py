"""The fields every fine-tuning config shares (classification and segmentation), defined once.

Each task's config (classification/config.py, segmentation/config.py) derives from FinetuneBase and adds
its own fields; the fields whose defaults differ per task (epochs, lr, batch_size, ...) stay in each.
"""

from pydantic import Field, model_validator

from ..config import Section


class FinetuneBase(Section):
    seed: int = Field(0, description=(
        "Base seed of the head/decoder initialisation, splits, sampling and augmentation (fold i uses seed + i)."))
    checkpoint: str | None = Field(None, description=(
        "Encoder weights in any format usfmae.checkpoint reads (our model.safetensors, a DeepSpeed checkpoint "
        "directory, a released USF-MAE .pt, an MAE ImageNet checkpoint); for classification baselines a local "
        "timm/torchvision weights file. None = random init."))
    preset: str | None = Field(None, description=(
        "MAE preset of the checkpoint when its file does not record one (released .pt files; default "
        "mae_vit_base_patch16)."))
    image_size: int | None = Field(None, gt=0, description=(
        "Input side; None = the encoder's pretraining size (224 for baselines). ViT position embeddings "
        "are resampled when it differs."))
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Seeded stratified/random hold-out fraction.")
    groups: str | None = Field(None, description=(
        "CSV path,group for a class-folder tree (usfmae.finetune.labelled_folder): images of one patient or cine "
        "share a group and never straddle a split (stratified group folds)."))
    min_lr: float = Field(1e-6, ge=0, description="Floor of the cosine decay.")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warmup length in epochs.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay (none on biases, norms, tokens).")
    clip_grad: float | None = Field(1.0, gt=0, description="Gradient-norm clip (None = off).")

    @model_validator(mode="after")
    def _check_lr_floor(self):
        if self.min_lr > self.lr:  # lr is each task's own field (its default differs)
            raise ValueError(f"min_lr {self.min_lr} exceeds lr {self.lr}")
        return self
