"""Frozen-encoder evaluation: k-NN and linear probe on extracted features, and a pretraining monitor.

    feats, y = extract_features(encoder, loader)                       # [N, D], [N]
    knn_eval(train_feats, train_y, val_feats, val_y, k=20, T=0.07)     # classification_metrics dict
    linear_probe(train_feats, train_y, val_feats, val_y)               # idem
    monitor_knn(mae_model, "data/labeled_small", image_size=64)        # flat dict for a training log

k-NN is the weighted vote of InstDisc / DINO: cosine similarity to the k nearest training features,
each neighbour voting for its class with weight exp(similarity / T). The linear probe is an L2-
regularised multinomial logistic regression on standardised features (scikit-learn's lbfgs).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from ..data.labelled import FolderDataset, transforms_for
from .folds import stratified_kfold
from .metrics import classification_metrics


def _pool(out: torch.Tensor, pool: str, num_prefix: int) -> torch.Tensor:
    """Encoder output to one vector per image: tokens [N, T, D] or feature maps [N, C, H, W] -> [N, D]."""
    if out.ndim == 2:
        return out
    if out.ndim == 4:
        return out.mean(dim=(2, 3))
    if out.ndim != 3:
        raise ValueError(f"cannot pool encoder output of shape {list(out.shape)}")
    if pool == "token":
        return out[:, 0]
    if pool == "avg":
        return out[:, num_prefix:].mean(dim=1)
    raise ValueError(f"pool must be 'avg' or 'token', got {pool!r}")


@torch.no_grad()
def extract_features(encoder: nn.Module, loader: DataLoader, device: torch.device | str | None = None,
                     pool: str = "avg") -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features (float32 [N, D], CPU) and labels (int64 [N]) of every (image, label) batch.

    timm classifiers give their pre-logits vector (forward_head(..., pre_logits=True): pooled and
    normed as their head sees it). Other encoders are pooled here: an MAE's forward_features
    [N, 1 + L, D] becomes the mean of its patch tokens (pool='avg') or its cls token (pool='token').
    The encoder's train/eval mode is restored afterwards.
    """
    param = next(encoder.parameters())
    device = torch.device(device) if device is not None else param.device
    num_prefix = getattr(encoder, "num_prefix_tokens", 1)
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    try:
        for x, y in loader:
            x = x.to(device, dtype=param.dtype)  # bf16 weights under DeepSpeed take bf16 inputs
            if hasattr(encoder, "forward_head") and hasattr(encoder, "forward_features"):
                out = encoder.forward_head(encoder.forward_features(x), pre_logits=True)
            elif hasattr(encoder, "forward_features"):
                out = encoder.forward_features(x)
            else:
                out = encoder(x)
            feats.append(_pool(out, pool, num_prefix).float().cpu())
            labels.append(torch.as_tensor(y, dtype=torch.int64))
    finally:
        encoder.train(was_training)
    if not feats:
        raise ValueError("extract_features: the loader yielded no batches")
    return torch.cat(feats), torch.cat(labels)


def _num_classes(*label_sets, num_classes: int | None) -> int:
    found = max(int(torch.as_tensor(y).max()) for y in label_sets) + 1
    return max(found, 2) if num_classes is None else num_classes


def knn_scores(train_feats: torch.Tensor, train_y: torch.Tensor, query_feats: torch.Tensor, num_classes: int,
               k: int = 20, T: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Class scores [Nq, C] (summing to 1 per row) from the k most cosine-similar training features."""
    train = F.normalize(torch.as_tensor(train_feats).float(), dim=1)  # [Nt, D]
    labels = torch.as_tensor(train_y, dtype=torch.int64)
    k = min(k, train.shape[0])
    out = []
    for query in F.normalize(torch.as_tensor(query_feats).float(), dim=1).split(chunk):
        sim, idx = (query @ train.T).topk(k, dim=1)  # [n, k]
        votes = torch.zeros(query.shape[0], num_classes).scatter_add_(1, labels[idx], (sim / T).exp())
        out.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(out)


def knn_eval(train_feats, train_y, val_feats, val_y, k: int = 20, T: float = 0.07,
             num_classes: int | None = None) -> dict:
    """classification_metrics of the weighted k-NN vote on the validation features (+ k, T)."""
    c = _num_classes(train_y, val_y, num_classes=num_classes)
    scores = knn_scores(train_feats, train_y, val_feats, c, k, T).numpy()
    y = torch.as_tensor(val_y).numpy()
    return {**classification_metrics(y, scores.argmax(1), c, y_score=scores),
            "k": min(k, len(train_feats)), "temperature": T}


def linear_probe_scores(train_feats, train_y, query_feats, num_classes: int, C: float = 1.0,
                        max_iter: int = 1000) -> np.ndarray:
    """Class probabilities [Nq, C] of a logistic regression fit on standardised training features."""
    x_train = np.asarray(torch.as_tensor(train_feats).float())
    y_train = np.asarray(torch.as_tensor(train_y))
    if np.unique(y_train).size < 2:
        raise ValueError(f"linear probe needs at least two classes in training, got {np.unique(y_train)}")
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(x_train), y_train)
    probs = clf.predict_proba(scaler.transform(np.asarray(torch.as_tensor(query_feats).float())))
    scores = np.zeros((probs.shape[0], num_classes))
    scores[:, clf.classes_] = probs  # classes missing from training keep probability 0
    return scores


def linear_probe(train_feats, train_y, val_feats, val_y, C: float = 1.0, max_iter: int = 1000,
                 num_classes: int | None = None) -> dict:
    """classification_metrics of a logistic-regression probe on the validation features."""
    c = _num_classes(train_y, val_y, num_classes=num_classes)
    scores = linear_probe_scores(train_feats, train_y, val_feats, c, C, max_iter)
    y = torch.as_tensor(val_y).numpy()
    return classification_metrics(y, scores.argmax(1), c, y_score=scores)


def monitor_knn(mae_model: nn.Module, labeled_dir: str | Path, image_size: int | None = None,
                device: torch.device | str | None = None, k: int = 20, T: float = 0.07, folds: int = 5,
                seed: int = 0, pool: str = "avg", batch_size: int = 64) -> dict:
    """Frozen-feature quality of an MAE during pretraining, on a small class-folder set.

    Features of every image (MaskedAutoencoderViT.forward_features, no masking, eval transform at
    image_size, default the model's input size), then a stratified `folds`-fold cross-validation
    of the k-NN vote and the linear probe, so every image is predicted once by a probe that did not
    see it. Returns plain floats for a metrics log: knn_accuracy, knn_macro_f1, linear_accuracy,
    linear_macro_f1, images, seconds. Costs one forward pass over the set; call it from one rank.
    """
    t0 = time.time()
    size = image_size or mae_model.patch_embed.img_size[0]
    dataset = FolderDataset(labeled_dir, transforms_for(False, size))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    feats, y = extract_features(mae_model, loader, device, pool)
    c = len(dataset.classes)
    knn = torch.zeros(len(y), c)
    linear = np.zeros((len(y), c))
    for train_idx, val_idx in stratified_kfold(y.numpy(), min(folds, len(y)), seed):
        knn[val_idx] = knn_scores(feats[train_idx], y[train_idx], feats[val_idx], c, k, T)
        linear[val_idx] = linear_probe_scores(feats[train_idx], y[train_idx], feats[val_idx], c)
    out = {"images": len(y)}
    for name, scores in (("knn", knn.numpy()), ("linear", linear)):
        m = classification_metrics(y.numpy(), scores.argmax(1), c)
        out[f"{name}_accuracy"], out[f"{name}_macro_f1"] = m["accuracy"], m["macro"]["f1"]
    out["seconds"] = round(time.time() - t0, 3)
    return out
