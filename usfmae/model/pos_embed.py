"""Fixed 2D sine-cosine position embeddings (as in facebookresearch/mae)."""

import torch


def _sincos_1d(embed_dim: int, pos: torch.Tensor) -> torch.Tensor:
    """pos: [M] -> [M, embed_dim] (half sin, half cos)."""
    assert embed_dim % 2 == 0
    omega = torch.arange(embed_dim // 2, dtype=torch.float64) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.double()[:, None] * omega[None, :]  # [M, D/2]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(embed_dim: int, grid_size: int, cls_token: bool = False) -> torch.Tensor:
    """[grid_size**2 (+1), embed_dim] float32; the cls row, when asked for, is zeros."""
    assert embed_dim % 4 == 0, "sin-cos 2D embedding needs embed_dim divisible by 4"
    coords = torch.arange(grid_size, dtype=torch.float64)
    grid_w, grid_h = torch.meshgrid(coords, coords, indexing="xy")  # w varies fastest, like numpy's default
    emb_h = _sincos_1d(embed_dim // 2, grid_w.reshape(-1))
    emb_w = _sincos_1d(embed_dim // 2, grid_h.reshape(-1))
    emb = torch.cat([emb_h, emb_w], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, embed_dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()
