"""Tumour segmentation model: a pretrained ViT encoder and a light progressive upsampling decoder.

    image [N, 3, H, W] -> ViT (timm, weights from our checkpoint formats) -> patch tokens [N, L, D]
      -> grid [N, D, H/p, W/p] -> conv stem -> log2(p) x (2x bilinear upsample, 3x3 conv, GroupNorm, GELU)
      -> 1x1 conv -> mask logits [N, 1, H, W]

The decoder is deliberately small (a few conv stages, in the spirit of SETR's progressive upsampling
head) so that the segmentation quality mostly reflects the encoder's features, which is what the
BUS-M2AE comparison (random vs multi-scale masking) needs to see.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from ...checkpoint import ENCODER_PREFIXES, LoadReport, load_into
from ...model import create_model
from ...model.timm_vit import timm_vit_like
from ..encoder import checkpoint_preset


def _conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """3x3 conv, GroupNorm (independent of the batch size, which is small here), GELU."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
                         nn.GroupNorm(math.gcd(8, out_ch), out_ch), nn.GELU())


class UpsampleDecoder(nn.Module):
    """[N, D, g, g] token grid -> [N, 1, g * 2^stages, g * 2^stages] logits."""

    def __init__(self, in_dim: int, widths: list[int], stages: int):
        super().__init__()
        # Use the first `stages` widths; if fewer are given, the last one repeats.
        widths = [widths[min(i, len(widths) - 1)] for i in range(max(stages, 1))]
        self.stem = _conv_block(in_dim, widths[0])
        self.stages = nn.ModuleList(
            _conv_block(widths[max(i - 1, 0)], widths[i]) for i in range(stages))
        self.head = nn.Conv2d(widths[-1], 1, 1)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        x = self.stem(grid)
        for stage in self.stages:
            x = stage(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        return self.head(x)


class SegmentationViT(nn.Module):
    """ViT encoder + UpsampleDecoder; forward returns mask logits at the input resolution."""

    def __init__(self, encoder: VisionTransformer, decoder_widths: list[int]):
        super().__init__()
        self.encoder = encoder
        patch = encoder.patch_embed.patch_size[0]
        self.decoder = UpsampleDecoder(encoder.embed_dim, decoder_widths, stages=math.ceil(math.log2(patch)))

    def token_grid(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3, H, W] -> encoder patch tokens (final norm applied) as a grid [N, D, H/p, W/p]."""
        tokens = self.encoder.forward_features(x)[:, self.encoder.num_prefix_tokens:]  # [N, L, D]
        gh, gw = self.encoder.patch_embed.grid_size
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, gh, gw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.token_grid(x))  # [N, 1, H', W'], H' = g * 2^ceil(log2 p)
        if logits.shape[-2:] != x.shape[-2:]:  # patch sizes that are not powers of 2
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


def build_encoder(checkpoint: str | None, preset: str | None = None, image_size: int | None = None,
                  drop_path: float = 0.0) -> tuple[VisionTransformer, LoadReport | None]:
    """timm ViT (no head, final norm kept) with the checkpoint's encoder weights; random init without one.

    The architecture comes from the preset recorded in our safetensors files, else `preset`. With
    image_size set, position embeddings are resampled to the new grid by load_into.
    """
    name, overrides = checkpoint_preset(checkpoint, preset)
    if image_size is not None:
        overrides = {**overrides, "img_size": image_size}
    mae = create_model(name, **overrides)
    # global_pool='token' keeps timm's final `norm` (the MAE encoder's norm.*), which the patch tokens need.
    vit = timm_vit_like(mae, num_classes=0, global_pool="token", drop_path_rate=drop_path)
    report = load_into(vit, checkpoint, prefixes=ENCODER_PREFIXES, verbose=False) if checkpoint else None
    return vit, report


def build_segmenter(checkpoint: str | None, preset: str | None = None, image_size: int | None = None,
                    decoder_widths: list[int] | tuple[int, ...] = (128, 64, 32, 16),
                    drop_path: float = 0.0) -> tuple[SegmentationViT, LoadReport | None]:
    """(SegmentationViT, encoder loading report or None) from any checkpoint format usfmae reads."""
    encoder, report = build_encoder(checkpoint, preset, image_size, drop_path)
    return SegmentationViT(encoder, list(decoder_widths)), report
