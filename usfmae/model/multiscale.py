"""BUS-M2AE-style multi-scale masking (our interpretation of its abstract; see SPEC "BUS-M2AE").

Token level: the masking units are square blocks of s x s patches (s in `scales`, e.g. 1, 2, 4) placed at
random on the patch grid, so tumours of very different sizes get hidden whole or in part. Every sample
masks exactly round(L * ratio) patches, by this sequential process:
  1. the block sequence: one block of every scale, in a random order, each kept while its area fits the
     remaining budget (so every scale is present), then scales drawn from `probs`; every block sits
     uniformly among the positions where it fits (a side larger than the grid is clipped to it);
  2. blocks are laid until the target count is covered: blocks may overlap, only newly covered cells
     count, a block covering nothing new is skipped, and the new cells of the block that crosses the
     target are trimmed to a random subset of the size still missing.

The batch is sampled at once on the training device, in a fixed number of tensor operations (no per-sample
loop, no host-device synchronisation, traceable by torch.compile): every sample draws a generous block
sequence up front (`max_draws`); one scatter and one min-pool per scale give, for every cell, the position
in the sequence of the first block covering it; the mask is the `target` cells with the smallest key
(first covering block, random tie-break). That is the sequential process exactly: every cell of the blocks
before the crossing one, and a uniformly random subset of the crossing block's new cells. A sample whose
drawn blocks cover fewer than `target` cells (vanishingly rare by the choice of `max_draws`) is topped up
with uniformly random uncovered cells.

Feature level: during pretraining only, zero the features of visible tokens that fall in multi-scale
blocks of the token grid, at chosen encoder depths (applied by MaskedAutoencoderViT).
"""

import itertools
import math

import torch
import torch.nn.functional as F

from .masking import lowest, num_masked

TIE_BITS = 31  # random tie-break bits below the block position in the int64 sort key


def _grid(num_patches: int) -> int:
    g = math.isqrt(num_patches)
    if g * g != num_patches:
        raise ValueError(f"multi-scale masking needs a square patch grid, got {num_patches} patches")
    return g


def _scale_probs(scales: tuple[int, ...], probs: tuple[float, ...] | None) -> tuple[float, ...]:
    """Validated, normalised scale probabilities (uniform when None), as plain floats."""
    p = tuple(float(x) for x in probs) if probs is not None else (1.0,) * len(scales)
    if len(p) != len(scales) or any(x < 0 for x in p) or sum(p) <= 0:
        raise ValueError(f"scale probabilities {probs} do not fit scales {scales}")
    return tuple(x / sum(p) for x in p)


def max_draws(num_patches: int, target: int) -> int:
    """Blocks drawn per sample after the forced ones: twice the mean number of 1x1 blocks needed to cover
    `target` of `num_patches` cells (coupon collector: L (H_L - H_(L-T))), plus 32. Larger blocks need
    fewer. At L = 196, T = 49 (ViT-B/16, 25%) that is 145 draws against 56 +- 3 for 1x1 blocks alone."""
    mean = sum(num_patches / (num_patches - i) for i in range(target))
    return math.ceil(2 * mean) + 32


def _pick(index: torch.Tensor, values: list[float]) -> torch.Tensor:
    """values[index] as float32 for a short Python list, by torch.where: no host-to-device copy."""
    out = torch.full(index.shape, values[0], dtype=torch.float32, device=index.device)
    for j in range(1, len(values)):
        out = torch.where(index == j, values[j], out)
    return out


def draw_blocks(batch: int, grid: int, target: int, scales: tuple[int, ...], probs: tuple[float, ...],
                draws: int, device=None, generator: torch.Generator | None = None):
    """Every sample's block sequence, B = len(scales) + draws blocks each, as tensors [N, B]:
    (order float: position in the sequence, B for a forced block that did not fit the budget;
     scale index long; top long; left long)."""
    n_s, b = len(scales), len(scales) + draws
    u = torch.rand(batch, n_s + draws + 2 * b, device=device, generator=generator)
    u_perm, u_scale, u_top, u_left = u.split([n_s, draws, b, b], dim=1)
    # forced blocks: the scales in a random order, each kept while its area fits what is left of the target
    perm = u_perm.argsort(dim=1)  # [N, S]
    area = _pick(perm, [float(s * s) for s in scales])
    budget = torch.full((batch,), float(target), device=device)
    forced = []
    for t in range(n_s):
        fits = area[:, t] <= budget
        budget = budget - torch.where(fits, area[:, t], 0.0)
        forced.append(torch.where(fits, float(t), float(b)))
    # then scales drawn from probs (inverse CDF on the cumulative thresholds)
    drawn = torch.zeros(batch, draws, dtype=torch.long, device=device)
    for c in list(itertools.accumulate(probs))[:-1]:
        drawn += u_scale >= c
    scale = torch.cat([perm, drawn], dim=1)  # [N, B]
    order = torch.cat([torch.stack(forced, dim=1),
                       torch.arange(n_s, b, dtype=torch.float32, device=device).expand(batch, -1)], dim=1)
    span = grid + 1 - _pick(scale, [float(min(s, grid)) for s in scales])  # corner positions per axis
    top = (u_top * span).long().clamp(max=grid - 1)  # clamp: guards u * span rounding up to span
    left = (u_left * span).long().clamp(max=grid - 1)
    return order, scale, top, left


def first_cover(order: torch.Tensor, scale: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                grid: int, sides: list[int]) -> torch.Tensor:
    """[N, G*G] float: for every cell, the order of the first block covering it (B where none does).

    Blocks as from `draw_blocks` ([N, B] each), `sides` the clipped side of each scale index."""
    n, b = order.shape
    n_s = len(sides)
    # earliness = -order, so "first" is a max: the scatter and the pooling are both max reductions.
    # corner[n, j, i, k]: earliness of the earliest scale-j block with its top-left corner at (i, k).
    corner = torch.full((n * n_s * grid * grid,), -float(b), device=order.device)
    sample = torch.arange(n, device=order.device).unsqueeze(1)
    flat = ((sample * n_s + scale) * grid + top) * grid + left  # [N, B]
    corner = corner.scatter_reduce(0, flat.flatten(), -order.flatten(), "amax").view(n, n_s, grid, grid)
    # an s x s block covers cell (i, k) iff its corner lies in the s x s window ending at (i, k): max-pool
    early = None
    for j, s in enumerate(sides):
        c = corner[:, j:j + 1]
        if s > 1:
            c = F.max_pool2d(F.pad(c, (s - 1, 0, s - 1, 0), value=-float(b)), s, stride=1)
        early = c if early is None else torch.maximum(early, c)
    return -early.view(n, grid * grid)


def multiscale_mask(batch: int, num_patches: int, mask_ratio: float, device=None,
                    generator: torch.Generator | None = None, scales: tuple[int, ...] = (1, 2, 4),
                    probs: tuple[float, ...] | None = None) -> torch.Tensor:
    """[N, L] bool, True = masked, exactly round(L * ratio) per row, made of s x s patch blocks."""
    grid = _grid(num_patches)
    scales = tuple(scales)
    p = _scale_probs(scales, probs)
    target = num_masked(num_patches, mask_ratio)
    blocks = draw_blocks(batch, grid, target, scales, p, max_draws(num_patches, target), device, generator)
    first = first_cover(*blocks, grid, [min(s, grid) for s in scales])  # [N, L]
    # sort key: first covering block, then a random tie-break among that block's cells (exact in int64)
    tie = torch.randint(0, 2**TIE_BITS, (batch, num_patches), device=device, generator=generator)
    return lowest((first.long() << TIE_BITS) + tie, target)


def feature_block_mask(ids_keep: torch.Tensor, num_patches: int, rate: float, scales: tuple[int, ...],
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """[N, L_keep] bool: visible tokens whose grid cell lies in multi-scale blocks covering `rate` of the grid."""
    full = multiscale_mask(ids_keep.shape[0], num_patches, rate, device=ids_keep.device, generator=generator,
                           scales=scales)
    return torch.gather(full, 1, ids_keep)
