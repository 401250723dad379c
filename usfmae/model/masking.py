"""Masking strategies as plain functions.

Every strategy returns a bool mask [N, L] with True = masked and exactly the same number of masked
patches in every row, so the encoder always sees a fixed number of visible tokens. Strategies run on the
training device with a fixed number of tensor operations and no host-device synchronisation (no `.item()`,
no data-dependent shapes, no constants copied from the host), so they cost the same every step and trace
into one graph under torch.compile.
"""

from typing import Callable

import torch


def num_masked(num_patches: int, mask_ratio: float) -> int:
    """Patches masked per sample: round(L * ratio), kept within [0, L - 1] so one token stays visible."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return min(int(round(num_patches * mask_ratio)), num_patches - 1)


def lowest(key: torch.Tensor, k: int) -> torch.Tensor:
    """key [N, L] -> bool [N, L], True at the k smallest keys of every row (exactly k per row)."""
    ranks = key.argsort(dim=1).argsort(dim=1)  # rank of each entry within its row
    return ranks < k


def random_mask(batch: int, num_patches: int, mask_ratio: float, device=None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform masking without replacement (the paper's strategy): [N, L] bool."""
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    return lowest(noise, num_masked(num_patches, mask_ratio))


def _multiscale(*args, **kwargs) -> torch.Tensor:
    from .multiscale import multiscale_mask  # imported lazily: multiscale imports num_masked from here

    return multiscale_mask(*args, **kwargs)


MASKING_STRATEGIES: dict[str, Callable[..., torch.Tensor]] = {"random": random_mask, "multiscale": _multiscale}


def get_masking(name: str) -> Callable[..., torch.Tensor]:
    """Look a masking strategy up by name."""
    try:
        return MASKING_STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown masking strategy {name!r}; known: {sorted(MASKING_STRATEGIES)}") from None
