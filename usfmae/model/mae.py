"""Masked autoencoder with a ViT encoder (He et al. 2022), as USF-MAE uses it.

Parameter names follow facebookresearch/mae's `models_mae.py` exactly, so the released USF-MAE weights
and the MAE ImageNet checkpoints load with strict=True. Unlike the reference, the number of input
channels is a real argument (patchify/unpatchify and the prediction head follow it).
"""

from functools import partial

import torch
import torch.nn as nn
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch.utils.checkpoint import checkpoint

from .masking import num_masked, random_mask
from .multiscale import feature_block_mask
from .pos_embed import sincos_2d


class MaskedAutoencoderViT(nn.Module):
    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 decoder_embed_dim: int = 512, decoder_depth: int = 8, decoder_num_heads: int = 16,
                 mlp_ratio: float = 4.0, norm_pix_loss: bool = False, mask_ratio: float = 0.25,
                 drop_path_rate: float = 0.0, feature_mask_depths: tuple[int, ...] = (),
                 feature_mask_rate: float = 0.0, feature_mask_scales: tuple[int, ...] = (1, 2)):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.patch_size, self.in_chans, self.mask_ratio = patch_size, in_chans, mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.grad_checkpointing = False
        # BUS-M2AE feature-level masking (training only): zero multi-scale blocks of visible-token
        # features entering the encoder blocks listed in feature_mask_depths.
        if any(not 0 <= d < depth for d in feature_mask_depths):
            raise ValueError(f"feature_mask_depths {feature_mask_depths} must lie in [0, {depth})")
        self.feature_mask_depths = tuple(feature_mask_depths)
        self.feature_mask_rate, self.feature_mask_scales = feature_mask_rate, tuple(feature_mask_scales)

        # encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer, drop_path=dpr[i])
            for i in range(depth)])
        self.norm = norm_layer(embed_dim)

        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim),
                                              requires_grad=False)
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)
        self.initialize_weights()

    # ------------------------------------------------------------------ set-up
    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def initialize_weights(self) -> None:
        grid = self.patch_embed.grid_size[0]
        self.pos_embed.data.copy_(sincos_2d(self.pos_embed.shape[-1], grid, cls_token=True).unsqueeze(0))
        self.decoder_pos_embed.data.copy_(
            sincos_2d(self.decoder_pos_embed.shape[-1], grid, cls_token=True).unsqueeze(0))
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))  # like nn.Linear, not nn.Conv2d
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def no_weight_decay(self) -> set[str]:
        """Parameter names excluded from weight decay besides biases and norms."""
        return {"cls_token", "pos_embed", "mask_token", "decoder_pos_embed"}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute encoder and decoder block activations in the backward pass."""
        self.grad_checkpointing = enable

    # ------------------------------------------------------------------ patches
    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """imgs: [N, C, H, W] -> [N, L, p*p*C] (pixel order p, q, c as in the reference)."""
        p, c = self.patch_size, self.in_chans
        n, _, h, w = imgs.shape
        assert h % p == 0 and w % p == 0 and imgs.shape[1] == c
        x = imgs.reshape(n, c, h // p, p, w // p, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(n, (h // p) * (w // p), p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, L, p*p*C] -> [N, C, H, W] (square grid)."""
        p, c = self.patch_size, self.in_chans
        h = w = int(x.shape[1] ** 0.5)
        assert h * w == x.shape[1]
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    # ------------------------------------------------------------------ forward
    def _run_block(self, blk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    def forward_encoder(self, imgs: torch.Tensor, mask: torch.Tensor, n_masked: int):
        """imgs [N, C, H, W], mask [N, L] bool (True = masked, `n_masked` per row)
        -> latent [N, 1 + L_keep, D], ids_restore [N, L].

        The masked count is a host integer, not read from the mask: reading it would make the host wait
        for the device every step, and a shape that depends on tensor data cannot be compiled.
        """
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:, :]  # [N, L, D]
        n, length, dim = x.shape
        # Visible patches first (in patch order), masked after: a stable sort on the mask does it.
        ids_shuffle = torch.argsort(mask.to(torch.int8), dim=1, stable=True)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :length - n_masked]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))  # [N, L_keep, D]
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(n, -1, -1)
        x = torch.cat([cls, x], dim=1)
        mask_features = self.training and self.feature_mask_rate > 0
        for d, blk in enumerate(self.blocks):
            if mask_features and d in self.feature_mask_depths:
                x = self._mask_features(x, ids_keep)
            x = self._run_block(blk, x)
        return self.norm(x), ids_restore

    def _mask_features(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """x [N, 1 + L_keep, D]: zero visible tokens inside multi-scale blocks of the grid (cls untouched)."""
        dropped = feature_block_mask(ids_keep, self.num_patches, self.feature_mask_rate, self.feature_mask_scales)
        keep = torch.cat([torch.ones_like(dropped[:, :1]), ~dropped], dim=1).to(x.dtype).unsqueeze(-1)
        return x * keep

    def forward_features(self, imgs: torch.Tensor) -> torch.Tensor:
        """Encoder on every patch, no masking: [N, 1 + L, D] (what a timm ViT export computes)."""
        mask = torch.zeros(imgs.shape[0], self.num_patches, dtype=torch.bool, device=imgs.device)
        return self.forward_encoder(imgs, mask, 0)[0]

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """x [N, 1 + L_keep, D] -> pixel predictions [N, L, p*p*C]."""
        x = self.decoder_embed(x)
        n, length = ids_restore.shape
        mask_tokens = self.mask_token.expand(n, length + 1 - x.shape[1], -1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # no cls token
        x_ = torch.gather(x_, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # unshuffle
        x = torch.cat([x[:, :1, :], x_], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = self._run_block(blk, x)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:, :]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error per patch, averaged over masked patches only."""
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = ((pred.float() - target.float()) ** 2).mean(dim=-1)  # [N, L]
        m = mask.to(loss.dtype)
        return (loss * m).sum() / m.sum().clamp(min=1.0)

    def forward(self, imgs: torch.Tensor, mask_ratio: float | None = None, mask: torch.Tensor | None = None):
        """-> (loss, pred [N, L, p*p*C], mask [N, L] bool, True = masked).

        Masks round(L * ratio) patches per sample, ratio = `mask_ratio` or the model's. `mask`, when given,
        replaces random masking and must mask exactly that many patches in every row (checked on the
        device, without waiting for it: a wrong count fails at the next synchronisation, on CPU at once).
        """
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        n_masked = num_masked(self.num_patches, ratio)
        if mask is None:
            mask = random_mask(imgs.shape[0], self.num_patches, ratio, device=imgs.device)
        else:
            mask = self._check_mask(mask, imgs.shape[0], n_masked, ratio)
        latent, ids_restore = self.forward_encoder(imgs, mask, n_masked)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask

    def _check_mask(self, mask: torch.Tensor, batch: int, n_masked: int, ratio: float) -> torch.Tensor:
        if mask.shape != (batch, self.num_patches):
            raise ValueError(f"mask must have shape [{batch}, {self.num_patches}], got {list(mask.shape)}")
        mask = mask.bool()
        torch._assert_async((mask.sum(dim=1) == n_masked).all(),
                            f"every row of the mask must mask {n_masked} of {self.num_patches} patches "
                            f"(mask ratio {ratio}); pass mask_ratio= for a mask made at another ratio")
        return mask
