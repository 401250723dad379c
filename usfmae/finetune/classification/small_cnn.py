"""A small CNN trained from scratch: the supervised floor a pretrained encoder has to beat.

A ViT trained from random init on a few hundred images is a weak baseline (ViTs lack the locality
prior), so a pretrained encoder beating it says little. A small convolutional network with batch norm
is what a practitioner without a foundation model would train instead. Its cost per image is of the
order of the tiny ViT's (about 0.13 GFLOPs forward at 128 px with the default widths; the tiny ViT at
128 px with 16 px patches is about 0.07).

    model = SmallCNN(num_classes=2)              # [N, 3, S, S] -> logits [N, 2]
    feats = model.forward_head(model.forward_features(x), pre_logits=True)   # [N, 128]
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """A stride-2 stem, then one stage per width of two conv3x3-BN-ReLU layers, max-pooled between stages.

    With widths (16, 32, 64, 128) an S x S input leaves the last stage as [N, 128, S/16, S/16]; the head
    is global average pooling, dropout and a linear layer. The interface is timm's (forward_features,
    forward_head(pre_logits=...), num_classes), so training, probes and feature extraction treat it as
    any other classifier.
    """

    def __init__(self, num_classes: int = 2, in_chans: int = 3, widths: tuple[int, ...] = (16, 32, 64, 128),
                 drop_rate: float = 0.0):
        super().__init__()
        if num_classes < 0 or not widths:
            raise ValueError(f"SmallCNN needs num_classes >= 0 and at least one width, got {num_classes}, {widths}")
        self.num_classes, self.num_features = num_classes, widths[-1]
        layers: list[nn.Module] = [_conv_bn_relu(in_chans, widths[0], stride=2)]
        c_in = widths[0]
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers += [_conv_bn_relu(c_in, width), _conv_bn_relu(width, width)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(c_in, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C_in, S, S] -> feature maps [N, widths[-1], S / 2^len(widths), ...]."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Feature maps -> pooled features [N, widths[-1]] (pre_logits) or logits [N, num_classes]."""
        x = self.drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
