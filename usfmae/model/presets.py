"""Named model presets and `create_model`."""

from typing import Any

from .mae import MaskedAutoencoderViT

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's model (USF-MAE, Megahed et al. 2025; README "2. Pretrain"): ViT-B/16 encoder, 8-block 512-wide decoder, 25% masking.
    # Decoder heads: 16 as in the reference code the released weights were trained with (paper says 8).
    "mae_vit_base_patch16": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16,
                                 mlp_ratio=4.0, mask_ratio=0.25),
    # CPU-sized model for the demo and tests: 64x64 input, 8x8 patches -> 64 patches.
    "mae_vit_tiny_patch8": dict(img_size=64, patch_size=8, embed_dim=96, depth=4, num_heads=3,
                                decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4,
                                mlp_ratio=4.0, mask_ratio=0.25),
}


def create_model(name: str, **overrides: Any) -> MaskedAutoencoderViT:
    """Build a preset, with keyword overrides of any constructor argument (None values are ignored)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    kwargs = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
    return MaskedAutoencoderViT(**kwargs)
