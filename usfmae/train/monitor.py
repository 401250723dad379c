"""Run visibility: JSON-lines + TensorBoard metrics, reconstruction grids, FLOPs and MFU."""

import json
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from ..data.transforms import denormalize

# Dense bf16 peak TFLOP/s for MFU; unknown GPUs get no MFU rather than a wrong one.
GPU_PEAK_TFLOPS = {"H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "RTX 4090": 165.0,
                   "RTX 4080 SUPER": 104.0, "V100": 125.0}


class MetricsLogger:
    """Rank-0 writer of metrics.jsonl and (optionally) TensorBoard scalars."""

    def __init__(self, run_dir: Path, tensorboard: bool, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    # keys with their own group ("knn/knn_accuracy") keep it; the rest go under pretrain/
                    self.tb.add_scalar(k if "/" in k else f"pretrain/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def flops_per_image(model: torch.nn.Module, image_size: int, in_chans: int) -> int:
    """Forward FLOPs for one image at the model's masking ratio, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_chans, image_size, image_size, device=next(model.parameters()).device,
                    dtype=next(model.parameters()).dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def gpu_peak_flops() -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name().upper()
    for key, tflops in GPU_PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def mfu(fwd_flops_per_image: int, images_per_s: float, world_size: int) -> float | None:
    """Model FLOPs utilisation: (fwd + 2x bwd) FLOPs achieved / peak, per GPU."""
    peak = gpu_peak_flops()
    return None if peak is None else 3 * fwd_flops_per_image * images_per_s / (peak * world_size)


def save_reconstruction_grid(model, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                             path: Path, max_images: int = 8) -> Path:
    """Rows of (original | masked | reconstruction with visible patches pasted back), de-normalised."""
    n = min(max_images, imgs.shape[0])
    imgs, pred, mask = imgs[:n].float(), pred[:n].float().detach(), mask[:n]
    p2c = model.patchify(imgs).shape[-1]
    m = mask.unsqueeze(-1).expand(-1, -1, p2c).float()
    m_img = model.unpatchify(m)
    recon = model.unpatchify(pred)
    if getattr(model, "norm_pix_loss", False):  # predictions are per-patch normalised: restore stats
        target = model.patchify(imgs)
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        recon = model.unpatchify(pred * (var + 1e-6) ** 0.5 + mean)
    masked = imgs * (1 - m_img)
    pasted = imgs * (1 - m_img) + recon * m_img
    rows = torch.stack([denormalize(imgs), denormalize(masked) * (1 - m_img), denormalize(pasted)], dim=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(rows.reshape(-1, *imgs.shape[1:]).cpu(), str(path), nrow=3, padding=2)
    return path
