"""AdamW parameter groups for every trainer (pretraining, classification, segmentation), built by timm.

No weight decay on biases, norms (every 1-D parameter), tokens and position embeddings; optional
layer-wise lr decay (BEiT / MAE fine-tuning) for models timm can split into layers. Each group carries
an `lr_scale` that the trainers multiply the scheduled lr by.
"""

import torch.nn as nn
from timm.optim import param_groups_layer_decay, param_groups_weight_decay

from ..checkpoint import WRAPPER_PREFIXES

# Names never decayed whatever the model's own no_weight_decay() says (MAE's and timm ViT's tokens and
# position embeddings).
NO_DECAY_NAMES = frozenset({"cls_token", "mask_token", "reg_token", "dist_token", "pos_embed", "decoder_pos_embed"})


def unwrapped(model: nn.Module) -> nn.Module:
    """The module under torch.compile / DDP / DeepSpeed wrappers, so parameter names are the plain ones
    (the same rule as checkpoint.plain_name): a compiled model gets exactly the groups of the bare one."""
    while True:
        children = dict(model.named_children())
        if len(children) != 1 or f"{next(iter(children))}." not in WRAPPER_PREFIXES:
            return model
        model = next(iter(children.values()))


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None,
                 lr_scale: float = 1.0) -> list[dict]:
    """timm's groups of `model`'s trainable parameters: decayed weights and non-decayed (1-D, *.bias,
    NO_DECAY_NAMES, model.no_weight_decay()), split per layer when layer_decay is set.

    Every group gets lr_scale (times the layer's scale under layer_decay); empty groups are left out.
    """
    inner = unwrapped(model)
    skip = set(NO_DECAY_NAMES) | (set(inner.no_weight_decay()) if hasattr(inner, "no_weight_decay") else set())
    if layer_decay is not None:
        groups = param_groups_layer_decay(inner, weight_decay, no_weight_decay_list=skip, layer_decay=layer_decay)
    else:
        groups = param_groups_weight_decay(inner, weight_decay, no_weight_decay_list=skip)
    for group in groups:
        group["lr_scale"] = group.get("lr_scale", 1.0) * lr_scale
    return [g for g in groups if g["params"]]
