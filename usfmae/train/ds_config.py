"""Generate the DeepSpeed JSON from our config; users never hand-write it."""

from typing import Any

from ..config import PretrainConfig
from .plan import batch_split

# Gradient communication for a ~110 M-parameter model (ViT-B/16 MAE: 223 MB of bf16 gradients), chosen in
# benchmarks/README.md "ZeRO settings" with the arithmetic. In short: ZeRO-2 reduces each bucket on a side
# stream while the backward goes on (overlap_comm); with 1e7-element buckets (20 MB in bf16) the reduction
# keeps pace with the gradients the backward produces on NVLink and on InfiniBand, and only the last bucket
# (0.1-1 ms) is left after the backward. Each bucket is all-reduced (use_multi_rank_bucket_allreduce):
# DeepSpeed 0.19.8's per-owner `reduce` path synchronises the device before every bucket under overlap_comm.
# The parameter all-gather after the step goes out in one call per group (all_gather_into_tensor ignores
# allgather_bucket_size; gloo uses it: one bucket). Stage 1 does not serve better: with bf16 and gradient
# accumulation DeepSpeed routes it to its BF16_Optimizer, which all-reduces fp32 gradients after the backward.
ZERO_COMMUNICATION = {"overlap_comm": True, "contiguous_gradients": True, "reduce_scatter": True,
                      "use_multi_rank_bucket_allreduce": True, "reduce_bucket_size": 10_000_000,
                      "allgather_bucket_size": 500_000_000}


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def zero_stage(cfg: PretrainConfig, world_size: int, precision: str) -> int:
    """deepspeed.zero_stage, except on one fp32 rank: there ZeRO has nothing to partition, and its per-parameter
    bookkeeping cost 5-6% of a CPU step (benchmarks/README.md "Training engine"), so stage 0 runs the same
    computation. One bf16/fp16 GPU keeps its stage: at stage 0 DeepSpeed 0.19.8 (engine._do_optimizer_sanity_
    check) steps bf16 weights with no fp32 master copy (DDP_BFLOAT16), refuses fp32 accumulation of bf16
    (NotImplementedError), and wraps fp16 in FP16_Optimizer, which accumulates in fp16 and whose partitions
    fullstate cannot read for a world-size independent checkpoint."""
    return 0 if world_size == 1 and precision == "fp32" else cfg.deepspeed.zero_stage


def build_ds_config(cfg: PretrainConfig, world_size: int, precision: str) -> dict[str, Any]:
    """ZeRO stage, batch arithmetic, clipping and precision from our config, plus user overrides."""
    ds = cfg.deepspeed
    split = batch_split(ds, world_size)
    micro, accum, global_batch = split.micro, split.accum, split.realised
    conf: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accum,
        "train_batch_size": global_batch,
        "gradient_clipping": ds.gradient_clipping,
        "zero_optimization": {"stage": zero_stage(cfg, world_size, precision), **ZERO_COMMUNICATION},
        # Our optimizer is torch's AdamW (fused): DeepSpeed must accept a client optimizer under ZeRO.
        "zero_allow_untested_optimizer": True,
        # bf16: a step whose gradients hold inf/NaN is skipped on every rank (the non-finite loss policy
        # relies on it: train/health.py); fp32 steps are skipped on a non-finite gradient norm.
        "bf16": {"enabled": precision == "bf16", "check_grad_overflow": True},
        # fp16: dynamic loss scaling (loss_scale 0), from 2**16, halved on overflow (that step is skipped).
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16,
                 "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1},
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
    }
    if precision in ("bf16", "fp16") and accum > 1:
        # Summing micro-batch gradients in bf16 (8-bit mantissa) or fp16 (10 bits, and loss-scaled sums that can
        # overflow) loses their small parts; DeepSpeed 0.19.8 accumulates in fp32 with this key at ZeRO 1 and 2
        # (bf16 at ZeRO 1: its BF16_Optimizer; otherwise DeepSpeedZeroOptimizer's fp32 `grad_accum` per
        # parameter at stage 1 and fp32 gradient partitions at stage 2).
        conf["data_types"] = {"grad_accum_dtype": "fp32"}
    return _merge(conf, ds.overrides)
