"""The paper's supervised baselines (§2.6): VGG-19, ResNet-50 and ViT-B/16, built with timm.

Models are always created with ``pretrained=False`` so timm never reaches a model hub; ImageNet
weights come from a local file read by usfmae.checkpoint.load_state_dict (``.pth``/``.pt``/``.bin`` with ``torch.load(weights_only=True)``,
or ``.safetensors``). Accepted formats are those timm's own filters understand: timm checkpoints,
and torchvision's for VGG-19 / ResNet-50. The classifier head is reinitialised whenever its shape
differs from the task's (e.g. 1000 ImageNet classes -> 2), and the exact missing and unexpected
keys are reported. Masked-autoencoder checkpoints (MAE, USF-MAE) are not baselines: they go
through the project's checkpoint conversion.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import timm
from torch import nn

from ...checkpoint import LoadReport, load_state_dict
from ..registry import MODELS

log = logging.getLogger(__name__)

BASELINES = tuple(name for name, model in MODELS.items() if model.timm_baseline)


def _vgg_filter(state_dict: dict, model: nn.Module) -> dict:
    """torchvision VGG classifier.{0,3,6} -> timm pre_logits.fc{1,2} (as convs) and head.fc."""
    from timm.models.vgg import _filter_fn

    return _filter_fn(state_dict)


def _vit_filter(state_dict: dict, model: nn.Module) -> dict:
    """timm's ViT filter: converts known layouts and resamples position embeddings to the model."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(state_dict, model)


# Per-architecture conversion of a foreign state dict to timm's keys and shapes (timm's own code).
_FILTERS: dict[str, Callable[[dict, nn.Module], dict]] = {
    "vgg19": _vgg_filter,
    "resnet50": lambda state_dict, model: state_dict,  # torchvision and timm ResNet keys coincide
    "vit_base_patch16_224": _vit_filter,
}


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module names of the classifier head, from timm's pretrained_cfg (e.g. 'fc', 'head.fc')."""
    classifier = model.pretrained_cfg.get("classifier", ())
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{name}." for name in names)


def load_baseline_weights(model: nn.Module, name: str, path: str | Path, strict_backbone: bool = True) -> LoadReport:
    """Load a local weights file into a baseline built by build_baseline, head adapted.

    A head tensor whose shape differs from the model's is dropped, so the head keeps its fresh
    initialisation. Any other shape mismatch is an error. With strict_backbone, any other missing
    or unexpected key is an error too (a backbone half-loaded from the wrong file would silently
    train from scratch); without it they are only reported.
    """
    # Step 1: read and convert to timm's layout.
    state = _FILTERS[name](load_state_dict(path), model)
    own = model.state_dict()
    heads = _head_prefixes(model)

    # Step 2: drop head tensors of another shape; refuse any other mismatch.
    reinitialised = []
    for key in list(state):
        if key in own and state[key].shape != own[key].shape:
            if not key.startswith(heads):
                raise ValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, "
                                 f"model {name} expects {tuple(own[key].shape)}")
            reinitialised.append(key)
            del state[key]

    # Step 3: load and account for every key.
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in reinitialised]
    report = LoadReport(str(path), missing=missing, unexpected=list(result.unexpected_keys),
                        reinitialised=reinitialised, loaded=len(state) - len(result.unexpected_keys))
    if report.loaded == 0:
        raise ValueError(f"{path}: no tensor matches model {name}; is it a {name} checkpoint?")
    off_head = [k for k in missing if not k.startswith(heads)] + report.unexpected
    if strict_backbone and off_head:
        raise ValueError(f"{path} does not fit {name} outside the head: missing {missing[:10]}, "
                         f"unexpected {report.unexpected[:10]}")
    log.info("%s: %s", name, report)
    return report


def build_baseline(name: str, num_classes: int, weights: str | Path | None = None,
                   strict_backbone: bool = True, **timm_kwargs) -> nn.Module:
    """A timm baseline with a num_classes head, optionally initialised from a local weights file.

    name: one of BASELINES. timm_kwargs go to timm.create_model (e.g. drop_path_rate, or img_size
    for the ViT, whose 224-pixel position embeddings are then resampled on load); pretrained is
    always False so nothing is downloaded.
    """
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if timm_kwargs.pop("pretrained", False):
        raise ValueError("baselines never download weights: pass a local file as weights= instead of pretrained")
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **timm_kwargs)
    if weights is not None:
        load_baseline_weights(model, name, weights, strict_backbone=strict_backbone)
    return model
