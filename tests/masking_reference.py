"""The multi-scale sampler as it was before vectorisation (per sample, a Python loop, on the CPU): the
distribution the vectorised sampler must keep (tests/unit/model/test_multiscale.py) and the "before" of
benchmarks/masking.py."""

import math

import torch

from usfmae.model import num_masked


def reference_place_blocks(grid, target, scales, probs, generator):
    """The sampler as it was before vectorisation (one sample, Python loop): the distribution to keep."""
    mask = torch.zeros(grid, grid, dtype=torch.bool)
    blocks = []
    order = torch.randperm(len(scales), generator=generator).tolist()
    budget, first = target, []
    for k in order:
        if scales[k] ** 2 <= budget:
            first.append(scales[k])
            budget -= scales[k] ** 2
    count = 0
    while count < target:
        s = first.pop(0) if first else scales[int(torch.multinomial(probs, 1, generator=generator))]
        s = min(s, grid)
        i, j = (int(v) for v in torch.randint(0, grid - s + 1, (2,), generator=generator))
        new = ~mask[i:i + s, j:j + s]
        added = int(new.sum())
        if added == 0:
            continue
        if count + added > target:
            cells = new.nonzero()
            keep = cells[torch.randperm(len(cells), generator=generator)[:target - count]]
            mask[i + keep[:, 0], j + keep[:, 1]] = True
            count = target
        else:
            mask[i:i + s, j:j + s] = True
            count += added
        blocks.append((i, j, s))
    return mask, blocks


def reference_multiscale_mask(batch, num_patches, mask_ratio, device=None, generator=None, scales=(1, 2, 4),
                              probs=None):
    """[N, L] bool as the old multiscale_mask made it: one place_blocks call per sample, then to the device."""
    grid = math.isqrt(num_patches)
    p = torch.tensor(probs if probs is not None else [1.0] * len(scales), dtype=torch.float)
    target = num_masked(num_patches, mask_ratio)
    rows = [reference_place_blocks(grid, target, tuple(scales), p / p.sum(), generator)[0].flatten()
            for _ in range(batch)]
    return torch.stack(rows).to(device)


def reference_feature_block_mask(ids_keep, num_patches, rate, scales, generator=None):
    """[N, L_keep] bool as the old feature_block_mask made it (mask on the CPU, then gathered on the device)."""
    full = reference_multiscale_mask(ids_keep.shape[0], num_patches, rate, generator=generator, scales=scales)
    return torch.gather(full.to(ids_keep.device), 1, ids_keep)
