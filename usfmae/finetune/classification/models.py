"""The classifier a fine-tuning run trains: our encoder plus a head, a timm baseline, or the small CNN."""

import torch.nn as nn

from ...constants import DEFAULT_IMAGE_SIZE
from ..encoder import build_vit_classifier
from .baselines import build_baseline
from .config import FinetuneConfig
from .small_cnn import SmallCNN


def build_classifier(cfg: FinetuneConfig, num_classes: int) -> tuple[nn.Module, int, str]:
    """(model, input side, loading summary) for cfg.model: our encoder or a baseline.

    Baselines take cfg.checkpoint as a local weights file (None = random init); the ViT baseline's
    position embeddings follow cfg.image_size and its head cfg.global_pool. small_cnn is always random init.
    """
    if cfg.model == "usfmae":
        if cfg.random_init and not cfg.checkpoint:
            raise ValueError("random_init builds the architecture of `checkpoint`: give one (e.g. the pretrained export)")
        model, report = build_vit_classifier(cfg.checkpoint, num_classes, cfg.preset, cfg.global_pool,
                                             cfg.drop_path, cfg.image_size, load_weights=not cfg.random_init)
        summary = (str(report) if report is not None else "usfmae encoder: random init "
                   + (f"with the architecture of {cfg.checkpoint}" if cfg.random_init else "(no checkpoint)"))
        return model, model.patch_embed.img_size[0], summary
    size = cfg.image_size or DEFAULT_IMAGE_SIZE
    if cfg.random_init:
        raise ValueError(f"random_init applies to model usfmae; {cfg.model} takes checkpoint: null for random init")
    if cfg.model == "small_cnn":
        if cfg.checkpoint:
            raise ValueError(f"model small_cnn trains from scratch: checkpoint must be null, got {cfg.checkpoint}")
        return SmallCNN(num_classes), size, "small_cnn: random init (trained from scratch)"
    kwargs = {} if cfg.model == "vgg19" else {"drop_path_rate": cfg.drop_path}  # VGG has no residual paths
    if cfg.model.startswith("vit_"):
        # fc_norm=False keeps the ImageNet model's final norm (norm.*) before pooling with either head, so
        # its weights load whole; timm's default for 'avg' would swap it for a fresh fc_norm.
        kwargs.update(img_size=size, global_pool=cfg.global_pool, fc_norm=False)
    model = build_baseline(cfg.model, num_classes, weights=cfg.checkpoint, **kwargs)
    summary = f"{cfg.model}: " + (f"weights from {cfg.checkpoint}" if cfg.checkpoint else "random init")
    return model, size, summary
