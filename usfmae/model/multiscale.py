"""BUS-M2AE-style multi-scale masking (our interpretation of its abstract; see the README
section "BUS-M2AE: multi-scale masking and tumour segmentation").

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
    """Every sample's block sequence, B = len(scales) + draws blocks each:
    order [N, B] float32 (position in the sequence; B for a forced block that did not fit the budget),
    scale [N, B] long (index into `scales`), corner [N, B, 2] long (top row, left column)."""
    n_s, b = len(scales), len(scales) + draws
    u = torch.rand(batch, n_s + draws + 2 * b, device=device, generator=generator)
    u_perm, u_scale, u_corner = u.split([n_s, draws, 2 * b], dim=1)
    # forced blocks: the scales in a random order, each kept while its area fits what is left of the target
    perm = u_perm.argsort(dim=1)  # [N, S]
    areas = [float(s * s) for s in scales]
    if sum(areas) <= target:  # all fit whatever the order (the usual case): nothing to track
        order = torch.arange(b, dtype=torch.float32, device=device).expand(batch, -1)
    else:
        area = _pick(perm, areas)
        budget = torch.full((batch,), float(target), device=device)
        kept = []
        for t in range(n_s):
            fits = area[:, t] <= budget
            budget = budget - torch.where(fits, area[:, t], 0.0)
            kept.append(torch.where(fits, float(t), float(b)))
        drawn_order = torch.arange(n_s, b, dtype=torch.float32, device=device).expand(batch, -1)
        order = torch.cat([torch.stack(kept, dim=1), drawn_order], dim=1)
    # then scales drawn from probs (inverse CDF on the cumulative thresholds)
    drawn = torch.zeros(batch, draws, dtype=torch.long, device=device)
    for c in list(itertools.accumulate(probs))[:-1]:
        drawn += u_scale >= c
    scale = torch.cat([perm, drawn], dim=1)  # [N, B]
    span = grid + 1 - _pick(scale, [float(min(s, grid)) for s in scales])  # corner positions per axis
    # clamp: guards u * span rounding up to span
    corner = (u_corner.view(batch, b, 2) * span.unsqueeze(-1)).long().clamp(max=grid - 1)
    return order, scale, corner


def first_cover(order: torch.Tensor, scale: torch.Tensor, corner: torch.Tensor, grid: int,
                sides: list[int]) -> torch.Tensor:
    """[N, G*G] float32: for every cell, the order of the first block covering it (B where none does).

    Blocks as from `draw_blocks`; `sides` the side of each scale index, clipped to the grid."""
    n, b = order.shape
    n_s, cells, big = len(sides), grid * grid, max(sides)
    # earliness = -order, so "first" is a max: the scatter and the pooling are both max reductions.
    # early[n, j, i, k]: earliness of the earliest scale-j block with its top-left corner at (i, k).
    flat = (torch.arange(0, n * n_s * cells, n_s * cells, device=order.device).unsqueeze(1)
            + scale * cells + corner[..., 0] * grid + corner[..., 1])  # [N, B]
    early = torch.full((n * n_s * cells,), -float(b), device=order.device)
    early = early.scatter_reduce(0, flat.flatten(), -order.flatten(), "amax").view(n, n_s, grid, grid)
    if big > 1:  # room above and left for the largest block's window
        early = F.pad(early, (big - 1, 0, big - 1, 0), value=-float(b))
    # an s x s block covers cell (i, k) iff its corner lies in the s x s window ending at (i, k): max-pool
    first = None
    for j, s in enumerate(sides):
        window = early[:, j:j + 1, big - s:, big - s:]
        covered = F.max_pool2d(window, s, stride=1) if s > 1 else window  # [N, 1, G, G]
        first = covered if first is None else torch.maximum(first, covered)
    return -first.reshape(n, cells)


def tie_break(batch: int, num_patches: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """[N, L] float64 uniform in [0, 1): orders the cells that the same block covers first."""
    return torch.rand(batch, num_patches, dtype=torch.float64, device=device, generator=generator)


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
    # sort key: first covering block, then a uniform tie-break within it (float64: exact for any order)
    return lowest(first + tie_break(batch, num_patches, device, generator), target)


def feature_block_mask(ids_keep: torch.Tensor, num_patches: int, rate: float, scales: tuple[int, ...],
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """[N, L_keep] bool: visible tokens whose grid cell lies in multi-scale blocks covering `rate` of the grid."""
    full = multiscale_mask(ids_keep.shape[0], num_patches, rate, device=ids_keep.device, generator=generator,
                           scales=scales)
    return torch.gather(full, 1, ids_keep)
