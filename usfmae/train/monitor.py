"""Run visibility: JSON-lines + TensorBoard metrics, reconstruction grids, FLOPs and MFU."""

import json
import re
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torchvision.utils import save_image

from ..data.transforms import denormalize

# Dense peak TFLOP/s per GPU by the precision its matmuls run at (tensor cores for bf16/fp16/tf32, CUDA
# cores for fp32), from NVIDIA's datasheets; the datasheets give tensor rates "with sparsity", halved here.
# Unknown GPUs get no MFU rather than a wrong one.
GPU_PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # H100 datasheet: SXM5 BF16/FP16 1,979*, TF32 989*, FP32 67; 989.4 dense = 132 SMs x 1,830 MHz x 4,096
    "H100 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.0},  # 1,513*, 756*, 51
    "H100 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},  # per GPU: 1,671*, 835*, 60
    # H200 datasheet: SXM as H100 SXM (more memory, same compute); NVL 1,671*, 835*, 60
    "H200 SXM": {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 67.0},
    "H200 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
    # A100 datasheet (40/80 GB, SXM4 and PCIe alike): BF16/FP16 312 (624*), TF32 156 (312*), FP32 19.5
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    "L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6},  # 733*, 366*, 91.6
    "L40": {"bf16": 181.05, "fp16": 181.05, "tf32": 90.5, "fp32": 90.5},  # 362.1*, 181*, 90.5
    # HGX B200 (8 GPUs): FP16/BF16 36 PFLOPS*, TF32 18 PFLOPS*, FP32 600 TFLOPS; per GPU
    "B200": {"bf16": 2250.0, "fp16": 2250.0, "tf32": 1125.0, "fp32": 75.0},
    # Ada whitepaper (GeForce, FP32 accumulate): RTX 4090 FP16/BF16 165.2 (330.4*), TF32 82.6, FP32 82.6;
    # RTX 4080 Super (the authors' GPU): 80 SMs x 2.55 GHz at the same per-SM rates
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
    "RTX 4080 SUPER": {"bf16": 104.4, "fp16": 104.4, "tf32": 52.2, "fp32": 52.2},
}
# How torch.cuda.get_device_name() spells them ("NVIDIA H100 80GB HBM3" is the SXM part, "NVIDIA H100 PCIe",
# "NVIDIA H100 NVL", "NVIDIA A100-SXM4-80GB", "NVIDIA GeForce RTX 4080 SUPER"): whole name tokens that must
# all be present, and tokens that must be absent, so a PCIe or NVL part is never taken for an SXM one.
GPU_NAME_TOKENS: dict[str, tuple[set[str], set[str]]] = {
    "H100 SXM": ({"H100"}, {"PCIE", "NVL"}),
    "H100 PCIe": ({"H100", "PCIE"}, set()),
    "H100 NVL": ({"H100", "NVL"}, set()),
    "H200 SXM": ({"H200"}, {"NVL"}),
    "H200 NVL": ({"H200", "NVL"}, set()),
    "A100": ({"A100"}, set()),
    "L40S": ({"L40S"}, set()),
    "L40": ({"L40"}, set()),
    "B200": ({"B200"}, set()),
    "RTX 4090": ({"RTX", "4090"}, set()),
    "RTX 4080 SUPER": ({"RTX", "4080", "SUPER"}, set()),
}
PRECISIONS = ("bf16", "fp16", "fp32")


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

    def flush(self) -> None:
        """Everything logged so far on disk (metrics.jsonl is written per record; TensorBoard buffers)."""
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class ThroughputWindow:
    """Training images per second between two records, without the side work (checkpoints, reconstruction
    grids, the k-NN monitor's weight copy), which is timed apart and logged in its own keys (time/*_s)."""

    SIDE_WORK = ("checkpoint", "image_grid", "knn")

    def __init__(self, device: torch.device):
        self.device = device
        self.restart()

    def restart(self) -> None:
        self.start, self.images = time.perf_counter(), 0
        self.side = dict.fromkeys(self.SIDE_WORK, 0.0)

    @contextmanager
    def side_work(self, kind: str):
        """Time a block as `kind`; on a GPU, the training kernels still queued count as training first."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.side[kind] += time.perf_counter() - t0

    def close(self) -> dict:
        """Called right after a host sync (the device has done the window's steps): the record's timings."""
        train_s = max(time.perf_counter() - self.start - sum(self.side.values()), 1e-9)
        out = {"images_per_s": self.images / train_s, "time/train_s": train_s,
               **{f"time/{k}_s": v for k, v in self.side.items()}}
        self.restart()
        return out


def _attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """Math attention's matmuls, 2 FLOPs per multiply-add: Q K^T ([B, H, Sq, D] x [B, H, D, Sk]) and
    A V ([B, H, Sq, Sk] x [B, H, Sk, Dv])."""
    b, h, s_q, d = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    return 2 * b * h * s_q * s_k * (d + d_v)


def flops_per_image(model: torch.nn.Module, image_size: int, in_chans: int) -> int:
    """Forward FLOPs for one image at the model's masking ratio, counted by torch's FlopCounterMode.

    Matmuls, convolutions and attention, 2 FLOPs per multiply-add (norms and activations are not counted,
    the MFU convention). Attention is counted with the math-attention formula (QK^T and AV: 4 S_q S_k D
    per head and image) on every kernel: torch's counter has formulas for the CUDA kernels but none for
    the CPU flash kernel, whose products it would count as zero (35.56 instead of 37.00 GFLOPs for
    ViT-B/16 at 25% masking).
    """
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    x = torch.zeros(1, in_chans, image_size, image_size, device=next(model.parameters()).device,
                    dtype=next(model.parameters()).dtype)
    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _attention_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def gpu_model(device_name: str) -> str | None:
    """The GPU_PEAK_TFLOPS row for a device name (as torch.cuda.get_device_name spells it), or None.

    None for unknown GPUs, ambiguous names and MIG slices (a slice has a fraction of the GPU's peak)."""
    tokens = set(re.split(r"[^A-Z0-9]+", device_name.upper()))
    if "MIG" in tokens:
        return None
    found = [m for m, (need, avoid) in GPU_NAME_TOKENS.items() if need <= tokens and not avoid & tokens]
    return found[0] if len(found) == 1 else None


def matmul_precision(precision: str) -> str:
    """The peak-table column for a training precision: fp32 runs use the TF32 tensor-core peak when
    PyTorch lets fp32 matmuls run as TF32 (torch.backends.cuda.matmul.allow_tf32, or
    torch.set_float32_matmul_precision("high")), else the fp32 CUDA-core peak."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    if precision == "fp32":
        return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"
    return precision


def gpu_peak_flops(precision: str = "bf16") -> float | None:
    """Dense peak FLOP/s of this process's GPU at `precision`; None without CUDA or for an unknown GPU."""
    column = matmul_precision(precision)
    if not torch.cuda.is_available():
        return None
    model = gpu_model(torch.cuda.get_device_name())
    return None if model is None else GPU_PEAK_TFLOPS[model][column] * 1e12


def mfu(fwd_flops_per_image: int, images_per_s: float, world_size: int, precision: str = "bf16") -> float | None:
    """Model FLOPs utilisation: (fwd + 2x bwd) FLOPs achieved / peak at the run's precision, per GPU."""
    peak = gpu_peak_flops(precision)
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
