"""When do the per-parameter gradient hooks ZeRO-2 reduces buckets from fire, eager and under torch.compile?

    python benchmarks/compile_overlap.py [--preset mae_vit_tiny_patch8] [--backend aot_eager]

DeepSpeed 0.19.8's ZeRO-2 registers `register_post_accumulate_grad_hook` on every parameter; a bucket is reduced
on a side stream while the backward goes on. For eager mode and the two compile scopes of usfmae.train.compiling,
one backward (after a compiling warm-up) is run under a dispatch mode that counts matmuls, a clock of the
backward's progress that does not depend on speed; each hook records the clock when it fires. Printed as JSON per
scope: hooks, matmuls in the backward, the clock at the first and median hook, and how many hooks fired before
the backward's last matmul (those are the gradients that can be reduced while it goes on). aot_eager is enough:
AOTAutograd's joint graph decides when a compiled region hands out its gradients, whichever backend then
generates the code. CPU only; nothing here is a speed figure.
"""

import argparse
import json

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from usfmae.model import create_model, get_masking
from usfmae.train.compiling import compile_model

MATMULS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)


class MatmulClock(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += func in MATMULS
        return func(*args, **(kwargs or {}))


def hook_positions(preset: str, scope: str, backend: str, batch: int = 2) -> dict:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model(preset).train()
    net = model if scope == "eager" else compile_model(model, scope, backend)
    clock, fired = MatmulClock(), []
    for p in model.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda p: fired.append(clock.n))
    size = model.patch_embed.img_size[0]
    imgs, mask = torch.randn(batch, 3, size, size), get_masking("random")(batch, model.num_patches, 0.25)
    net(imgs, mask=mask)[0].backward()  # compiles
    fired.clear()
    loss = net(imgs, mask=mask)[0]
    with clock:
        loss.backward()
    fired.sort()
    return {"scope": scope, "hooks": len(fired), "backward_matmuls": clock.n, "first_hook_at_matmul": fired[0],
            "median_hook_at_matmul": fired[len(fired) // 2],
            "hooks_before_last_matmul": sum(f < clock.n for f in fired), "distinct_firing_points": len(set(fired))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mae_vit_tiny_patch8")
    ap.add_argument("--backend", default="aot_eager")
    args = ap.parse_args(argv)
    rows = [hook_positions(args.preset, s, args.backend) for s in ("eager", "blocks", "model")]
    print(json.dumps({"preset": args.preset, "backend": args.backend, "torch": torch.__version__, "scopes": rows},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
