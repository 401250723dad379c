"""AdamW parameter groups and construction."""

import torch
import torch.nn as nn

from ..checkpoint import plain_name


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and biases / norms / tokens / position embeddings without decay.

    The same for a torch.compile'd or DeepSpeed-wrapped model: names are compared without their prefixes."""
    inner = getattr(model, "_orig_mod", model)
    skip = set(inner.no_weight_decay()) if hasattr(inner, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        name = plain_name(name)
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float, impl: str) -> torch.optim.Optimizer:
    """torch AdamW (fused where asked) or DeepSpeed's FusedAdam in AdamW mode."""
    groups = param_groups(model, weight_decay)
    if impl == "deepspeed_fused":
        if not torch.cuda.is_available():
            # Its op JIT-compiles CUDA kernels: on a CPU-only machine that cannot work, so say so up front.
            raise ValueError("optimizer.impl=deepspeed_fused needs a CUDA GPU (DeepSpeed's FusedAdam op); "
                             "use optimizer.impl=torch_fused on CPU")
        from deepspeed.ops.adam import FusedAdam

        return FusedAdam(groups, lr=lr, betas=betas, eps=eps, adam_w_mode=True)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=(impl == "torch_fused"))
