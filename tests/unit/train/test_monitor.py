"""MFU inputs: exact forward FLOPs (attention counted on every kernel) and the peak table by GPU and precision
(CUDA queries patched: there is no GPU here)."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from usfmae.model import create_model
from usfmae.train import monitor
from usfmae.train.monitor import GPU_NAME_TOKENS, GPU_PEAK_TFLOPS, flops_per_image, gpu_model, mfu


def mae_matmul_flops(img, patch, chans, width, depth, dec_width, dec_depth, visible):
    """Matmul FLOPs of one MAE forward by hand (2 per multiply-add)."""
    tokens = (img // patch) ** 2
    pixels = patch * patch * chans

    def block(n, d):  # qkv 3d^2 + proj d^2 + MLP 8d^2 per token, QK^T and AV n^2 d each
        return 2 * (12 * n * d * d + 2 * n * n * d)

    return (2 * tokens * pixels * width + depth * block(visible + 1, width) + 2 * (visible + 1) * width * dec_width
            + dec_depth * block(tokens + 1, dec_width) + 2 * (tokens + 1) * dec_width * pixels)


def test_vit_b16_forward_flops_are_exact():
    model = create_model("mae_vit_base_patch16")  # 25% of 196 patches masked: 147 visible
    flops = flops_per_image(model, 224, 3)
    assert flops == mae_matmul_flops(224, 16, 3, 768, 12, 512, 8, visible=147)
    assert round(flops / 1e9, 2) == 37.00  # not 35.56: the CPU attention kernel's products are counted
    assert model.training  # the mode is restored


def test_attention_counts_as_on_the_math_backend():
    torch.manual_seed(0)
    model = create_model("mae_vit_tiny_patch8").eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as math:
        model(torch.zeros(1, 3, 64, 64))  # the math backend runs attention as plain bmm's
    assert flops_per_image(model, 64, 3) == math.get_total_flops()
    assert math.get_total_flops() == mae_matmul_flops(64, 8, 3, 96, 4, 64, 2, visible=48)


NAMES = {
    "NVIDIA H100 80GB HBM3": "H100 SXM",
    "NVIDIA H100 SXM5 80GB": "H100 SXM",
    "NVIDIA H100 PCIe": "H100 PCIe",
    "NVIDIA H100 NVL": "H100 NVL",
    "NVIDIA H200": "H200 SXM",
    "NVIDIA H200 NVL": "H200 NVL",
    "NVIDIA A100-SXM4-80GB": "A100",
    "NVIDIA A100-PCIE-40GB": "A100",
    "NVIDIA A100 80GB PCIe": "A100",
    "NVIDIA L40S": "L40S",
    "NVIDIA L40": "L40",
    "NVIDIA B200": "B200",
    "NVIDIA GeForce RTX 4090": "RTX 4090",
    "NVIDIA GeForce RTX 4080 SUPER": "RTX 4080 SUPER",
    # not in the table, or not a whole GPU: no MFU rather than a wrong one
    "NVIDIA GeForce RTX 4080": None,
    "NVIDIA GH200 480GB": None,
    "NVIDIA H800": None,
    "NVIDIA L4": None,
    "NVIDIA A10G": None,
    "Tesla V100-SXM2-16GB": None,
    "NVIDIA A100-SXM4-40GB MIG 1g.5gb": None,
}


@pytest.mark.parametrize("name,expected", list(NAMES.items()))
def test_device_names_match_precisely(name, expected):
    assert gpu_model(name) == expected


def test_peak_table_is_complete_and_dense():
    assert set(GPU_NAME_TOKENS) == set(GPU_PEAK_TFLOPS)
    for model, peaks in GPU_PEAK_TFLOPS.items():
        assert set(peaks) == {"bf16", "fp16", "tf32", "fp32"}, model
        assert peaks["bf16"] == peaks["fp16"] and peaks["bf16"] >= peaks["tf32"] >= peaks["fp32"] > 0, model
    # spot checks against the datasheets (dense = half the "with sparsity" figure)
    assert GPU_PEAK_TFLOPS["H100 SXM"]["bf16"] == 989.4 and GPU_PEAK_TFLOPS["H100 PCIe"]["bf16"] == 756.5
    assert GPU_PEAK_TFLOPS["A100"]["tf32"] == 156.0 and GPU_PEAK_TFLOPS["B200"]["bf16"] == 2250.0


@pytest.fixture
def gpu(monkeypatch):
    """Pretend to run on a named CUDA device (TF32 off for fp32 matmuls, restored afterwards)."""
    def use(name):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    tf32 = torch.backends.cuda.matmul.allow_tf32  # a property of a module object: monkeypatch cannot undo it
    torch.backends.cuda.matmul.allow_tf32 = False
    yield use
    torch.backends.cuda.matmul.allow_tf32 = tf32


def test_mfu_uses_the_peak_of_the_gpu_and_precision(gpu):
    fwd, ips = 37_001_838_592, 3000.0  # ViT-B/16 at 25% masking, images/s over 8 GPUs
    achieved = 3 * fwd * ips / 8
    gpu("NVIDIA H100 80GB HBM3")
    assert mfu(fwd, ips, 8) == pytest.approx(achieved / 989.4e12)
    gpu("NVIDIA H100 PCIe")  # not the SXM figure
    assert mfu(fwd, ips, 8, precision="bf16") == pytest.approx(achieved / 756.5e12)
    assert mfu(fwd, ips, 8, precision="fp16") == pytest.approx(achieved / 756.5e12)
    # fp32 runs: the fp32 peak, or the TF32 tensor-core peak when fp32 matmuls may run as TF32
    assert mfu(fwd, ips, 8, precision="fp32") == pytest.approx(achieved / 51.0e12)
    torch.backends.cuda.matmul.allow_tf32 = True
    assert mfu(fwd, ips, 8, precision="fp32") == pytest.approx(achieved / 378.0e12)
    gpu("NVIDIA B200")
    assert mfu(fwd, ips, 8, precision="bf16") == pytest.approx(achieved / 2250e12)
    gpu("NVIDIA GH200 480GB")
    assert mfu(fwd, ips, 8) is None
    with pytest.raises(ValueError, match="precision must be one of bf16, fp16, fp32"):
        mfu(fwd, ips, 8, precision="auto")


def test_no_mfu_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert monitor.gpu_peak_flops("bf16") is None and mfu(1, 1.0, 1) is None
