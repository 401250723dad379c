"""Project pretraining throughput of the paper's model onto GPUs from its counted FLOPs; prints JSON.

    .venv/bin/python benchmarks/gpu_projection.py [--mask-ratio 0.25] [--mfu 0.4]

1. FLOPs of one forward pass of mae_vit_base_patch16 at the given masking, counted on the CPU with
   torch.utils.flop_counter (matmuls and attention, 2 FLOPs per multiply-add; norms and activations are
   not counted, as usual for MFU), cross-checked against the closed form 24*N*D^2 + 4*N^2*D per block.
2. Training FLOPs per image = 3 x forward (backward ~ 2 x forward; recomputation under activation
   checkpointing is not useful work and so not counted, as in the MFU convention).
3. images/s = MFU x peak dense BF16 tensor FLOP/s / training FLOPs per image, and the time for the
   paper's schedule (100 epochs of 374,192 images), against the authors' 26.5 h at 392 images/s on one
   RTX 4080 Super. Several GPUs are assumed to scale linearly (data parallel, ZeRO-2, same MFU).
"""

import argparse
import json

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from usfmae.model import create_model
from usfmae.train.monitor import GPU_PEAK_TFLOPS

MODEL = "mae_vit_base_patch16"
IMAGES_PER_EPOCH, EPOCHS = 374_192, 100  # OpenUS-46 (paper Table 1), the paper's schedule
AUTHORS = {"gpu": "RTX 4080 Super", "images_per_s": 392, "hours_100_epochs": 26.5}
# Peaks from the one table the trainer's MFU uses (usfmae.train.monitor.GPU_PEAK_TFLOPS).
GPUS = {
    "H100 SXM": {
        "peak_bf16_dense_tflops": GPU_PEAK_TFLOPS["H100 SXM"]["bf16"],
        "source": "NVIDIA H100 datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity, 989.4 dense (SXM5)",
    },
    "RTX 4080 Super": {
        "peak_bf16_dense_tflops": GPU_PEAK_TFLOPS["RTX 4080 SUPER"]["bf16"],
        "source": "NVIDIA Ada (AD10x) whitepaper rate for GeForce: 512 dense FP16/BF16 tensor FMA per SM per "
                  "clock with FP32 accumulate (RTX 4090: 165.2 TFLOPS, 128 SMs, 2.52 GHz); 4080 Super: 80 SMs "
                  "x 2.55 GHz boost -> 104.4 TFLOPS (208.9 with FP16 accumulate; 52.2 TFLOPS is its FP32 "
                  "shader rate, not tensor)",
    },
}


def count_forward_flops(mask_ratio: float, batch: int = 2) -> tuple[int, dict[str, int]]:
    """(FLOPs of one image's forward pass, FLOPs per top-level module), counted on the CPU.

    Attention runs on SDPA's math backend: the counter has no formula for the CPU flash kernel and
    would silently count its QK^T and AV products as zero (the FLOPs are the same on every backend)."""
    model = create_model(MODEL).eval()
    size = model.patch_embed.img_size[0]
    imgs = torch.randn(batch, 3, size, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(imgs, mask_ratio=mask_ratio)
    per_module: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        parts = name.split(".")  # "MaskedAutoencoderViT.blocks.3": counts include the submodules'
        if len(parts) < 2:
            continue
        is_list = isinstance(getattr(model, parts[1], None), torch.nn.ModuleList)
        if len(parts) == (3 if is_list else 2):
            per_module[parts[1]] = per_module.get(parts[1], 0) + sum(ops.values()) // batch
    return counter.get_total_flops() // batch, per_module


def closed_form_forward_flops(mask_ratio: float, img: int = 224, patch: int = 16, width: int = 768, depth: int = 12,
                              dec_width: int = 512, dec_depth: int = 8, chans: int = 3) -> int:
    """Matmul FLOPs of one MAE forward pass: encoder on the visible tokens + cls, decoder on all + cls."""
    patches = (img // patch) ** 2
    visible = int(patches * (1 - mask_ratio))  # the reference MAE keeps int(L * (1 - ratio)) patches

    def block(tokens: int, dim: int) -> int:  # qkv + proj (4 D^2) and MLP (8 D^2) per token; QK^T and AV
        return 24 * tokens * dim * dim + 4 * tokens * tokens * dim

    patch_dim = patch * patch * chans
    return (2 * patches * patch_dim * width  # patch embedding runs on every patch before masking
            + depth * block(visible + 1, width)
            + 2 * (visible + 1) * width * dec_width  # decoder_embed
            + dec_depth * block(patches + 1, dec_width)
            + 2 * (patches + 1) * dec_width * patch_dim)  # decoder_pred


def projection(mask_ratio: float, mfu: float) -> dict:
    forward, per_module = count_forward_flops(mask_ratio)
    train = 3 * forward
    total_images = IMAGES_PER_EPOCH * EPOCHS
    gpus = {}
    for name, spec in GPUS.items():
        per_s = mfu * spec["peak_bf16_dense_tflops"] * 1e12 / train
        gpus[name] = {**spec, "mfu": mfu, "images_per_s": round(per_s, 1),
                      "hours_100_epochs": {f"{n} GPU": round(total_images / (n * per_s) / 3600, 2) for n in (1, 8)}}
    authors_mfu = AUTHORS["images_per_s"] * train / (GPUS["RTX 4080 Super"]["peak_bf16_dense_tflops"] * 1e12)
    h100_hours = gpus["H100 SXM"]["hours_100_epochs"]
    return {
        "model": MODEL, "mask_ratio": mask_ratio,
        "forward_gflops_per_image": round(forward / 1e9, 3),
        "forward_gflops_closed_form": round(closed_form_forward_flops(mask_ratio) / 1e9, 3),
        "forward_gflops_by_module": {k: round(v / 1e9, 3) for k, v in sorted(per_module.items()) if v},
        "train_gflops_per_image": round(train / 1e9, 3),
        "schedule": {"images_per_epoch": IMAGES_PER_EPOCH, "epochs": EPOCHS, "images": total_images},
        "gpus": gpus,
        "authors": {**AUTHORS, "hours_at_their_rate": round(total_images / AUTHORS["images_per_s"] / 3600, 2),
                    "implied_mfu": round(authors_mfu, 3)},
        "speedup_vs_authors": {k: round(AUTHORS["hours_100_epochs"] / v, 1) for k, v in h100_hours.items()},
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mask-ratio", type=float, default=0.25, help="fraction of patches masked (paper: 0.25)")
    ap.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed on every GPU")
    args = ap.parse_args(argv)
    print(json.dumps(projection(args.mask_ratio, args.mfu), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
