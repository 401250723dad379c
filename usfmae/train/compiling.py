"""torch.compile applied to the MAE from the outside, in one of two scopes (deepspeed.compile_scope).

ZeRO-2 overlaps gradient communication with the backward through one hook per parameter
(`register_post_accumulate_grad_hook`, DeepSpeed 0.19.8 utils/torch.py): a parameter's gradient is copied into a
bucket, and a full bucket is reduced on a side stream while the backward goes on. A compiled region's backward
is one autograd node that hands out all of its gradients when it ends, so its hooks fire together at that
point (AOTAutograd's behaviour, whichever backend generates the code; pytorch/pytorch#169461 reports the
same for replicate). Measured on CPU (benchmarks/README.md "Compiled backward and ZeRO-2"):
- "model": the whole forward + backward as one graph (fullgraph=True): every hook fires in the last 0.1% of
  the backward, so the whole gradient reduction (1.1 ms on NVLink, 11 ms on 2 x HDR nodes per step of
  ViT-B/16 at 64 images: benchmarks/README.md "ZeRO settings") runs after it, exposed;
- "blocks": each transformer block compiled on its own (fullgraph=True), the glue (patch embedding, masking
  gather, loss) eager: hooks fire block by block as in eager mode, so buckets are reduced during the
  backward as before. The attention and MLP of the blocks, where nearly all FLOPs are, are compiled either way.
"blocks" is the default. Compiling in place (nn.Module.compile) keeps the parameter names, so checkpoints
and exports are the same with and without it.
"""

import torch
import torch.nn as nn

SCOPES = ("blocks", "model")


def compile_model(model: nn.Module, scope: str, backend: str) -> nn.Module:
    """The module to hand to DeepSpeed: `model` with its encoder and decoder blocks compiled in place
    ("blocks"), or wrapped whole ("model"); fullgraph=True in both, as tests/unit/model/test_model_compile.py."""
    if scope == "model":
        return torch.compile(model, backend=backend, fullgraph=True)
    if scope != "blocks":
        raise ValueError(f"compile scope {scope!r}: expected one of {SCOPES}")
    for block in [*model.blocks, *model.decoder_blocks]:
        block.compile(backend=backend, fullgraph=True)
    return model
