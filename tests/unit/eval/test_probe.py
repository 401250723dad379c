"""Frozen-encoder evaluation: k-NN vote, linear probe, feature extraction, the pretraining monitor."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from usfmae.eval.probe import extract_features, knn_eval, knn_scores, linear_probe, monitor_knn
from usfmae.model import create_model
from usfmae.testing.synthetic import write_labeled

pytestmark = pytest.mark.usefixtures("one_thread")


def _clusters(n_per_class, num_classes, dim, seed, spread=0.3):
    """Gaussian blobs around random unit directions: separable by angle (what cosine k-NN sees)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=g), dim=1) * 3
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return x, y


def test_knn_separates_clusters_and_is_at_chance_on_shuffled_labels():
    x, y = _clusters(40, 3, 16, seed=0)
    xv, yv = _clusters(20, 3, 16, seed=0)  # same centres (same generator start), new draws below
    xv = xv + 0.3 * torch.randn(xv.shape, generator=torch.Generator().manual_seed(1))
    metrics = knn_eval(x, y, xv, yv, k=20, T=0.07)
    assert metrics["accuracy"] == 1.0 and metrics["k"] == 20
    assert sum(map(sum, metrics["confusion_matrix"])) == 60

    shuffled = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(2))]
    assert knn_eval(x, shuffled, xv, yv)["accuracy"] < 0.7


def test_knn_vote_matches_a_direct_computation():
    rng = np.random.default_rng(3)
    train, labels, query = rng.normal(size=(30, 5)), rng.integers(0, 3, 30), rng.normal(size=(7, 5))
    k, T = 4, 0.1
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    expected = np.zeros((7, 3))
    for i, sims in enumerate(qn @ tn.T):
        for j in np.argsort(-sims)[:k]:
            expected[i, labels[j]] += np.exp(sims[j] / T)
    expected /= expected.sum(1, keepdims=True)
    got = knn_scores(torch.tensor(train), torch.tensor(labels), torch.tensor(query), 3, k=k, T=T, chunk=3)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_knn_caps_k_at_the_training_set_size():
    x, y = _clusters(2, 2, 4, seed=5)
    assert knn_eval(x, y, x, y, k=20)["k"] == 4


def test_linear_probe_separates_a_linear_boundary_knn_struggles_with():
    # Class = sign of one coordinate among many noisy ones: linear, but not a cosine cluster.
    g = torch.Generator().manual_seed(4)
    x = torch.randn(400, 32, generator=g)
    y = (x[:, 0] > 0).long()
    x[:, 0] = (2 * y - 1) * (0.3 + 0.5 * x[:, 0].abs())  # a margin of 0.6 around the hyperplane x0 = 0
    metrics = linear_probe(x[:300], y[:300], x[300:], y[300:])
    assert metrics["accuracy"] >= 0.97 and metrics["auroc"] > 0.99
    assert knn_eval(x[:300], y[:300], x[300:], y[300:])["accuracy"] < metrics["accuracy"]


def test_linear_probe_needs_two_training_classes():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(x, torch.zeros(10, dtype=torch.long), x, torch.ones(10, dtype=torch.long))


def test_extract_features_pools_mae_patch_tokens_and_restores_mode():
    torch.manual_seed(0)
    mae = create_model("mae_vit_tiny_patch8").train()
    images = torch.randn(5, 3, 64, 64)
    loader = DataLoader(TensorDataset(images, torch.tensor([0, 1, 0, 1, 1])), batch_size=2)
    feats, labels = extract_features(mae, loader)
    assert feats.shape == (5, 96) and labels.tolist() == [0, 1, 0, 1, 1]
    assert mae.training
    with torch.no_grad():
        tokens = mae.eval().forward_features(images)
    torch.testing.assert_close(feats, tokens[:, 1:].mean(1))
    cls, _ = extract_features(mae, loader, pool="token")
    torch.testing.assert_close(cls, tokens[:, 0])


def test_extract_features_of_a_timm_cnn_uses_its_pre_logits():
    import timm

    cnn = timm.create_model("resnet18", pretrained=False, num_classes=2).eval()
    loader = DataLoader(TensorDataset(torch.randn(3, 3, 32, 32), torch.zeros(3, dtype=torch.long)), batch_size=3)
    feats, _ = extract_features(cnn, loader)
    assert feats.shape == (3, 512)


def test_monitor_knn_on_a_small_labeled_folder(tmp_path):
    labeled = write_labeled(tmp_path / "labeled", n_per_class=10, seed=2, size=64)
    torch.manual_seed(0)
    mae = create_model("mae_vit_tiny_patch8").train()
    out = monitor_knn(mae, labeled, image_size=64, device="cpu", k=5, folds=5)
    assert set(out) == {"images", "knn_accuracy", "knn_macro_f1", "linear_accuracy", "linear_macro_f1", "seconds"}
    assert out["images"] == 20
    assert all(0.0 <= out[key] <= 1.0 for key in ("knn_accuracy", "knn_macro_f1", "linear_accuracy"))
    assert mae.training  # the pretraining loop's mode is left alone
