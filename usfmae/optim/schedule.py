"""The learning-rate schedule of every trainer: linear warmup then half-cycle cosine to a floor (as MAE).

Pretraining calls it per optimizer step; fine-tuning per fractional epoch (epoch + i / steps_per_epoch).
"""

import math


def lr_at(step: float, total_steps: float, peak_lr: float, min_lr: float, warmup_steps: float) -> float:
    """Learning rate at `step` (0-based; may be fractional) of a run of `total_steps`.

    0 at step 0, rising linearly to peak_lr at `warmup_steps`, then half a cosine from peak_lr to
    min_lr, which it reaches at `total_steps` and keeps afterwards.
    """
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    # The guard only matters when warmup fills the whole run: then every later step sits at the floor.
    progress = min(1.0, (step - warmup_steps) / max(1e-9, total_steps - warmup_steps))
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
