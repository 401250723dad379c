"""BUS-M2AE multi-scale masking: token level (exact counts, seeded, the same distribution as the
per-sample sampler it replaced) and feature level."""

import math

import pytest
import torch
from scipy import stats

from usfmae.config import MaskingConfig, PretrainConfig, load_config
from usfmae.model import create_model, get_masking, num_masked
from usfmae.model.masking import lowest
from usfmae.model.multiscale import (_scale_probs, draw_blocks, first_cover, max_draws, multiscale_mask,
                                     tie_break)

from masking_reference import reference_place_blocks


# ---------------------------------------------------------------- samples from both samplers
def reference_sample(n, num_patches, ratio, scales, probs, seed):
    """-> masks [n, L] bool, blocks laid per scale [n, S] (counted as the reference records them)."""
    g = torch.Generator().manual_seed(seed)
    grid, target = math.isqrt(num_patches), num_masked(num_patches, ratio)
    p = torch.tensor(_scale_probs(scales, probs))
    masks, counts = [], []
    for _ in range(n):
        mask, blocks = reference_place_blocks(grid, target, scales, p, g)
        masks.append(mask.flatten())
        counts.append([sum(s == min(sc, grid) for _, _, s in blocks) for sc in scales])
    return torch.stack(masks), torch.tensor(counts)


def vectorised_sample(n, num_patches, ratio, scales, probs, seed):
    """The same from the vectorised sampler, step by step so the blocks it laid can be counted: a block
    is laid iff it is the first to cover some masked cell."""
    g = torch.Generator().manual_seed(seed)
    grid, target = math.isqrt(num_patches), num_masked(num_patches, ratio)
    order, scale, corner = draw_blocks(n, grid, target, scales, _scale_probs(scales, probs),
                                       max_draws(num_patches, target), generator=g)
    first = first_cover(order, scale, corner, grid, [min(s, grid) for s in scales])
    mask = lowest(first + tie_break(n, num_patches, generator=g), target)
    # the steps above are multiscale_mask's: same seed, same mask
    assert torch.equal(mask, multiscale_mask(n, num_patches, ratio, generator=torch.Generator().manual_seed(seed),
                                             scales=scales, probs=probs))
    laid = ((first.unsqueeze(1) == order.unsqueeze(2)) & mask.unsqueeze(1)).any(dim=2)  # [n, B]
    counts = torch.stack([(laid & (scale == j)).sum(1) for j in range(len(scales))], dim=1)
    return mask, counts


def neighbours(masks, grid):
    """Masked 4-neighbour pairs per sample [n]: how clustered the masked cells are."""
    m = masks.view(-1, grid, grid).float()
    return (m[:, 1:] * m[:, :-1]).sum((1, 2)) + (m[:, :, 1:] * m[:, :, :-1]).sum((1, 2))


def placement(masks, grid):
    """Per-sample statistics [n] of where the masked cells lie: mean row, mean column, cells on the border."""
    m = masks.view(-1, grid, grid).float()
    idx = torch.arange(grid, dtype=torch.float)
    rows, cols = (m.sum(2) * idx).sum(1), (m.sum(1) * idx).sum(1)
    border = m.sum((1, 2)) - m[:, 1:-1, 1:-1].sum((1, 2))
    return {"row": rows, "col": cols, "border": border}


def same_distribution(a_masks, a_counts, b_masks, b_counts, grid) -> dict[str, float]:
    """p-values of two-sample tests (on per-sample statistics) that two samplers draw alike."""
    p = {}
    for j in range(a_counts.shape[1]):  # blocks laid per sample, per scale
        p[f"blocks_scale{j}"] = stats.mannwhitneyu(a_counts[:, j], b_counts[:, j]).pvalue
    a, b = placement(a_masks, grid), placement(b_masks, grid)  # spatial coverage
    p.update({k: stats.mannwhitneyu(a[k], b[k]).pvalue for k in a})
    p["neighbours"] = stats.mannwhitneyu(neighbours(a_masks, grid), neighbours(b_masks, grid)).pvalue
    return p


CASES = [(196, 0.25, (1, 2, 4), None),  # ViT-B/16, the paper's ratio, the default scales
         (196, 0.6, (1, 2, 4), (0.5, 0.3, 0.2)),
         (64, 0.25, (1, 2, 4), None),  # the tiny preset: 1 + 4 + 16 > 16 masked, not every scale fits
         (64, 0.25, (1, 2), None)]  # the tiny preset with the feature-masking default scales


@pytest.mark.parametrize("num_patches,ratio,scales,probs", CASES)
def test_same_distribution_as_the_per_sample_sampler(num_patches, ratio, scales, probs):
    n, grid = 1200, math.isqrt(num_patches)
    ref = reference_sample(n, num_patches, ratio, scales, probs, seed=0)
    new = vectorised_sample(n, num_patches, ratio, scales, probs, seed=1)
    target = num_masked(num_patches, ratio)
    assert (ref[0].sum(1) == target).all() and (new[0].sum(1) == target).all()
    p = same_distribution(*ref, *new, grid)
    assert min(p.values()) > 1e-3, p
    # the mean number of blocks of each scale agrees to within a few percent
    assert torch.allclose(new[1].float().mean(0), ref[1].float().mean(0), rtol=0.06, atol=0.05)


def test_the_statistics_tell_different_samplers_apart():
    """The tests above have power: another scale mix, blocks that never reach the last row and column
    (an off-by-one in the corner range), or plain random masking are rejected."""
    ref = reference_sample(1200, 196, 0.25, (1, 2, 4), None, seed=0)
    other_mix = vectorised_sample(1200, 196, 0.25, (1, 2, 4), (0.25, 0.25, 0.5), seed=1)
    assert min(same_distribution(*ref, *other_mix, 14).values()) < 1e-6
    inner, counts = vectorised_sample(1200, 169, 49 / 169, (1, 2, 4), None, seed=1)  # 13x13 in the corner
    shifted = torch.nn.functional.pad(inner.view(-1, 13, 13), (0, 1, 0, 1)).reshape(-1, 196)
    p = same_distribution(*ref, shifted, counts, 14)
    assert max(p["row"], p["col"], p["border"]) < 1e-6
    rand = get_masking("random")(1200, 196, 0.25, generator=torch.Generator().manual_seed(1))
    assert same_distribution(*ref, rand, ref[1], 14)["neighbours"] < 1e-6


@pytest.mark.parametrize("num_patches,ratio", [(196, 0.25), (196, 0.75), (64, 0.25), (64, 0.5), (256, 0.4),
                                               (196, 0.0), (16, 0.9)])
@pytest.mark.parametrize("scales", [(1, 2, 4), (1,), (4, 8), (3, 20)])
def test_exact_masked_count(num_patches, ratio, scales):
    mask = multiscale_mask(16, num_patches, ratio, generator=torch.Generator().manual_seed(0), scales=scales)
    assert mask.shape == (16, num_patches) and mask.dtype == torch.bool
    assert (mask.sum(1) == num_masked(num_patches, ratio)).all()


def test_blocks_are_laid_whole_before_the_trimmed_one():
    mask, counts = vectorised_sample(200, 196, 0.25, (1, 2, 4), None, seed=3)
    # 1 + 4 + 16 fits in 49: one block of every scale goes first; a 4x4 always adds cells (the others may
    # land inside it and add none, as in the reference)
    assert (counts[:, 2] >= 1).all() and (counts >= 1).all(1).float().mean() > 0.8
    windows = torch.nn.functional.max_pool2d(-(~mask).view(-1, 1, 14, 14).float(), 4, stride=1)
    assert (windows.amax((1, 2, 3)) == 0).float().mean() > 0.99  # a fully masked 4x4 window in (nearly) all


def test_too_few_drawn_blocks_are_topped_up_with_random_cells():
    g = torch.Generator().manual_seed(4)
    order, scale, corner = draw_blocks(64, 14, 49, (1, 2, 4), (1 / 3,) * 3, 0, generator=g)  # forced only
    first = first_cover(order, scale, corner, 14, [1, 2, 4])
    covered = first < order.shape[1]
    assert (covered.sum(1) <= 21).all()
    mask = lowest(first + tie_break(64, 196, generator=g), 49)
    assert (mask.sum(1) == 49).all() and (mask | ~covered).all()


def test_draws_cover_the_target_with_a_wide_margin():
    # 1x1 blocks alone (the slowest to cover): 145 draws for 49 cells, 56 needed on average
    assert max_draws(196, 49) == 145
    g = torch.Generator().manual_seed(5)
    order, scale, corner = draw_blocks(2000, 14, 49, (1,), (1.0,), max_draws(196, 49), generator=g)
    covered = first_cover(order, scale, corner, 14, [1]) < order.shape[1]
    assert covered.sum(1).min() >= 49 + 40


def test_seeded_and_deterministic():
    a = multiscale_mask(4, 196, 0.25, generator=torch.Generator().manual_seed(7))
    b = multiscale_mask(4, 196, 0.25, generator=torch.Generator().manual_seed(7))
    c = multiscale_mask(4, 196, 0.25, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = get_masking("multiscale")(4, 196, 0.25)
    torch.manual_seed(3)
    assert torch.equal(d, get_masking("multiscale")(4, 196, 0.25))


def test_bad_scale_probabilities_are_refused():
    for probs in [(1.0,), (1.0, -1.0, 1.0), (0.0, 0.0, 0.0)]:
        with pytest.raises(ValueError, match="scale probabilities"):
            multiscale_mask(2, 196, 0.25, probs=probs)
    with pytest.raises(ValueError, match="square patch grid"):
        multiscale_mask(2, 48, 0.25)


def test_blocks_are_spatially_clustered_unlike_random():
    torch.manual_seed(0)
    assert neighbours(multiscale_mask(32, 196, 0.25), 14).sum() > \
        2 * neighbours(get_masking("random")(32, 196, 0.25), 14).sum()


def test_feature_masking_only_in_training_mode():
    torch.manual_seed(0)
    plain = create_model("mae_vit_tiny_patch8")
    feat = create_model("mae_vit_tiny_patch8", feature_mask_depths=(1, 3), feature_mask_rate=0.4)
    feat.load_state_dict(plain.state_dict())
    imgs = torch.randn(2, 3, 64, 64)
    mask = get_masking("random")(2, 64, 0.25)
    plain.train(), feat.train()
    assert not torch.allclose(plain(imgs, mask=mask)[1], feat(imgs, mask=mask)[1])
    plain.eval(), feat.eval()
    assert torch.allclose(plain(imgs, mask=mask)[1], feat(imgs, mask=mask)[1])
    assert torch.allclose(plain.forward_features(imgs), feat.forward_features(imgs))
    # exported weights carry no trace of it: the same keys as a plain MAE
    assert set(feat.state_dict()) == set(plain.state_dict())
    with pytest.raises(ValueError, match="feature_mask_depths"):
        create_model("mae_vit_tiny_patch8", feature_mask_depths=(4,), feature_mask_rate=0.1)


def test_feature_masks_zero_multiscale_blocks_of_visible_tokens():
    from usfmae.model.multiscale import feature_block_mask

    torch.manual_seed(0)
    ids_keep = torch.rand(8, 64).argsort(1)[:, :48].sort(1).values  # 48 visible tokens of 64
    dropped = feature_block_mask(ids_keep, 64, 0.25, (1, 2))
    assert dropped.shape == (8, 48)
    # 16 grid cells per sample are dropped; those that fall on visible tokens are flagged
    assert (dropped.sum(1) <= 16).all() and dropped.sum() > 8 * 16 * 48 / 64 / 2


def test_config_wires_multiscale_and_feature_masking():
    cfg = load_config(PretrainConfig, "configs/pretrain_tiny.yaml",
                      ["masking.strategy=multiscale", "masking.scales=[1,2]", "masking.scale_probs=[0.5,0.5]",
                       "masking.feature_depths=[1]", "masking.feature_rate=0.2"])
    assert cfg.masking.strategy_kwargs() == {"scales": (1, 2), "probs": (0.5, 0.5)}
    model = create_model(cfg.model.preset, **cfg.masking.model_kwargs())
    assert model.feature_mask_depths == (1,) and model.feature_mask_rate == 0.2
    with pytest.raises(ValueError, match="scale_probs"):
        MaskingConfig(strategy="multiscale", scales=[1, 2], scale_probs=[1.0])
