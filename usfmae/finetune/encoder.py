"""Our pretrained ViT encoder for fine-tuning (classification head or segmentation decoder on top)."""

import torch.nn as nn

from ..checkpoint import ENCODER_PREFIXES, ExportMeta, LoadReport, load_into
from ..model import create_model
from ..model.timm_vit import timm_vit_like


def checkpoint_preset(path: str | None, fallback: str | None) -> tuple[str, dict]:
    """(preset, model overrides) recorded in our safetensors export, else `fallback` (default ViT-B/16)."""
    meta = ExportMeta.read(path) if path else None
    if meta is not None:
        return meta.preset, meta.model_overrides
    return fallback or "mae_vit_base_patch16", {}


def build_vit_classifier(checkpoint: str | None, num_classes: int, preset: str | None = None,
                         global_pool: str = "avg", drop_path: float = 0.0, image_size: int | None = None,
                         load_weights: bool = True) -> tuple[nn.Module, LoadReport | None]:
    """timm ViT with the MAE encoder's layout, encoder weights from `checkpoint` (any supported format).

    num_classes=0 gives no head (as timm): the model returns pooled features [N, embed_dim].

    image_size: input side when it differs from the pretraining one; the checkpoint's position
    embeddings are then resampled to the new grid by load_into.
    load_weights=False: the checkpoint's architecture only (the control run). Without weights, the encoder
    starts from the MAE's own init (xavier linears, sin-cos position embeddings), as pretraining step 0 does.
    """
    name, overrides = checkpoint_preset(checkpoint, preset)
    if image_size is not None:
        overrides = {**overrides, "img_size": image_size}
    mae = create_model(name, **overrides)
    vit = timm_vit_like(mae, num_classes=num_classes, global_pool=global_pool, drop_path_rate=drop_path)
    report = None
    if checkpoint and load_weights:
        # With global_pool='avg' timm's ViT has a fresh fc_norm and no final norm, as in MAE's
        # fine-tuning recipe: the encoder's norm.* is then reported as unexpected.
        report = load_into(vit, checkpoint, prefixes=ENCODER_PREFIXES, verbose=False)
    else:  # the encoder keys of our MAE are timm's; norm.* has no place under global_pool='avg'
        vit.load_state_dict({k: v for k, v in mae.state_dict().items() if k.startswith(ENCODER_PREFIXES)},
                            strict=False)
    if isinstance(vit.head, nn.Linear):  # num_classes=0: no head (nn.Identity), a feature extractor as in timm
        nn.init.trunc_normal_(vit.head.weight, std=2e-5)
        nn.init.zeros_(vit.head.bias)
    return vit, report
