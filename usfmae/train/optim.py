"""The pretraining optimizer: AdamW (torch, fused where asked, or DeepSpeed's FusedAdam) over the shared
parameter groups (usfmae.optim.param_groups)."""

import torch
import torch.nn as nn

from ..optim import param_groups


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
