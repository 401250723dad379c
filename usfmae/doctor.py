"""The environment checks of `usfmae doctor` (usfmae/commands/doctor.py): each returns a Check (name, status,
what was found, the fix). Nothing is compiled, downloaded or started: DeepSpeed ops are only probed for
compatibility, S3 gets one HEAD and one list call with short timeouts.
"""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .netguard import OFFLINE_ENV, RAY_BOOTSTRAP_FILE

OK, WARN, SKIP, FAIL = "OK", "WARN", "SKIP", "FAIL"
GIB = 1024**3
TORCH_PIN = "2.14.1"  # pyproject.toml: torch==2.14.1 (tests/unit/test_docker.py checks they agree)
CUDA_DRIVER_HINT = "CUDA 13.0 wheels need NVIDIA driver >= 580"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def check_tesseract() -> Check:
    """The OCR binary the cleaning step shells out to (through pytesseract), its version and English data."""
    fix = "apt-get install tesseract-ocr (Debian/Ubuntu), brew install tesseract (macOS), or put it on PATH"
    exe = shutil.which("tesseract")
    if exe is None:
        return Check("tesseract", FAIL, f"no tesseract binary on PATH ({os.environ.get('PATH', '')[:60]}...)", fix)
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
        langs = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return Check("tesseract", FAIL, f"{exe} does not run: {err}", fix)
    text = (out.stdout or out.stderr).strip()
    match = re.search(r"tesseract\s+v?(\d+)\.(\d+)[.\d]*", text)
    if not match:
        return Check("tesseract", FAIL, f"{exe} --version printed {text[:60]!r}", fix)
    version = match.group(0).split()[-1]
    if int(match.group(1)) < 4:
        return Check("tesseract", WARN, f"{exe} {version}: older than 4 (no LSTM engine)", "install tesseract >= 4")
    if "eng" not in (langs.stdout + langs.stderr).split():
        return Check("tesseract", FAIL, f"{exe} {version}: no 'eng' language data",
                     "apt-get install tesseract-ocr-eng, or set TESSDATA_PREFIX to a folder with eng.traineddata")
    return Check("tesseract", OK, f"{exe} {version} (eng)")


def check_tesseract_api() -> Check:
    """The in-process OCR engine (tesserocr) cleaning uses by default: without it every call starts the binary."""
    from usfmae.cleaning import ocr

    ocr._api_problem.cache_clear()
    ocr.tessdata_dir.cache_clear()
    try:
        problem, folder = ocr._api_problem("tesseract", "eng"), ocr.tessdata_dir()
    finally:  # what the doctor saw under its environment is not what cleaning should reuse
        ocr._api_problem.cache_clear()
        ocr.tessdata_dir.cache_clear()
    if problem is None:
        import tesserocr

        return Check("tesseract-api", OK, f"tesserocr {tesserocr.__version__} ({tesserocr.tesseract_version().split()[1]}, "
                     f"data in {folder})")
    return Check("tesseract-api", WARN, f"{problem}: OCR falls back to one tesseract process per call (slower)",
                 "pip install tesserocr (Linux x86_64 wheels bundle libtesseract) with the binary's language data")


def check_torch() -> Check:
    try:
        import torch
    except ImportError as err:
        return Check("torch", FAIL, f"cannot import torch: {err}", f"pip install torch=={TORCH_PIN}")
    base = torch.__version__.split("+")[0]
    if base != TORCH_PIN:
        return Check("torch", WARN, f"torch {torch.__version__}; the project pins {TORCH_PIN}",
                     f"pip install torch=={TORCH_PIN} (or use the Docker image)")
    return Check("torch", OK, f"torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'})")


def nvidia_smi_sees_gpus() -> bool:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout.strip() != ""
    except (OSError, subprocess.TimeoutExpired):
        return False


def check_cuda() -> Check:
    import torch

    if torch.cuda.is_available():
        from .train.device import BF16_MIN_CAPABILITY, driver_cuda_version, supported_gpu_problem

        n, driver = torch.cuda.device_count(), driver_cuda_version()
        caps = {i: tuple(torch.cuda.get_device_capability(i)) for i in range(n)}
        names = sorted({f"{torch.cuda.get_device_name(i)} ({c[0]}.{c[1]})" for i, c in caps.items()})
        for i, cap in caps.items():  # the check each rank makes at start-up (train.device.select_device)
            if problem := supported_gpu_problem(cap, torch.cuda.get_arch_list(), driver, torch.version.cuda):
                return Check("cuda", FAIL, f"GPU {i}: {problem}",
                             "train on supported GPUs (or update the driver, as the detail says)")
        bf16 = "bf16" if all(c >= BF16_MIN_CAPABILITY for c in caps.values()) else "no native bf16: fp16"
        version = f"driver supports CUDA {driver // 1000}.{driver % 1000 // 10}" if driver else "driver version unknown"
        return Check("cuda", OK, f"{n} GPU(s): {', '.join(names)}; {bf16}; {version}")
    if nvidia_smi_sees_gpus():
        return Check("cuda", FAIL, "nvidia-smi lists GPUs but torch cannot use them",
                     f"update the driver ({CUDA_DRIVER_HINT}); in Docker run with --gpus all")
    return Check("cuda", WARN, "no CUDA device: pretraining stops at start-up unless CPU ranks are asked for "
                 "(--cpu or deepspeed.device: cpu; gloo, fp32): tests and demos only",
                 f"on a GPU node: NVIDIA driver ({CUDA_DRIVER_HINT}); in Docker: --gpus all")


def check_nccl() -> Check:
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        return Check("nccl", FAIL, "this torch build has no torch.distributed", f"pip install torch=={TORCH_PIN}")
    if not torch.cuda.is_available():
        if not dist.is_gloo_available():
            return Check("nccl", FAIL, "no GPU and no gloo: CPU ranks cannot communicate",
                         f"pip install torch=={TORCH_PIN}")
        return Check("nccl", OK, "no GPU: NCCL not needed; CPU ranks use gloo")
    if not dist.is_nccl_available():
        return Check("nccl", FAIL, "CUDA works but torch has no NCCL", f"pip install torch=={TORCH_PIN} (CUDA wheel)")
    version = ".".join(map(str, torch.cuda.nccl.version()))
    return Check("nccl", OK, f"NCCL {version}")


def check_deepspeed() -> Check:
    try:
        import deepspeed
    except Exception as err:  # a broken install raises more than ImportError
        return Check("deepspeed", FAIL, f"cannot import deepspeed: {type(err).__name__}: {err}",
                     "pip install 'deepspeed>=0.16,<0.20' (see docker/Dockerfile.train)")
    return Check("deepspeed", OK, f"deepspeed {deepspeed.__version__}")


# Ops a run may load, per accelerator: fused_adam (optimizer.impl=deepspeed_fused), cpu_adam (ZeRO
# offload overrides); on CPU, DeepSpeed's shared-memory all-reduce is loaded at every start.
WANTED_OPS = {"cuda": ["FusedAdamBuilder", "CPUAdamBuilder"], "cpu": ["ShareMemCommBuilder"]}


def jit_cache_has(op_name: str) -> bool:
    """Whether an earlier JIT build of the op is cached (where torch.utils.cpp_extension puts it)."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:  # the default root gets a per-Python, per-CUDA subfolder; an explicit one does not
        tag = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
        root = Path(get_default_build_root()) / f"py{sys.version_info.major}{sys.version_info.minor}_{tag}"
    return any((Path(root) / op_name).glob("*.so"))


def check_deepspeed_ops() -> Check:
    """Prebuilt (installed) vs JIT DeepSpeed ops for this accelerator, probed with is_compatible only."""
    try:
        from deepspeed.accelerator import get_accelerator
        from deepspeed.git_version_info import accelerator_name, installed_ops
    except Exception as err:
        return Check("deepspeed ops", FAIL, f"cannot import deepspeed: {err}", "see the deepspeed row")
    accel = get_accelerator()._name
    found, jit = [], []
    for builder_name in WANTED_OPS.get(accel, []):
        builder = get_accelerator().create_op_builder(builder_name)
        if builder is None:
            continue
        if installed_ops.get(builder.NAME) and accelerator_name == accel:
            found.append(f"{builder.NAME}: prebuilt")
        elif not builder.is_compatible(verbose=False):
            found.append(f"{builder.NAME}: unavailable here")
        elif jit_cache_has(builder.NAME):
            found.append(f"{builder.NAME}: JIT-built, cached")
        else:
            found.append(f"{builder.NAME}: not built")
            jit.append(builder.NAME)
    detail = f"accelerator {accel}; " + ("; ".join(found) or "no ops needed")
    if jit:
        fix = ("the training image prebuilds them (docker/Dockerfile.train); or reinstall: DS_ACCELERATOR=cuda "
               "DS_BUILD_FUSED_ADAM=1 DS_BUILD_CPU_ADAM=1 pip install --no-build-isolation deepspeed"
               if accel == "cuda" else "nothing to do if a C++ compiler and ninja are present (built once, cached)")
        return Check("deepspeed ops", WARN, detail + f" -> {', '.join(jit)} JIT-compile at first start", fix)
    return Check("deepspeed ops", OK, detail)


def check_ray() -> Check:
    try:
        import ray
    except Exception as err:
        return Check("ray", FAIL, f"cannot import ray: {err}", "pip install 'ray[default]>=2.40,<3'")
    return Check("ray", OK, f"ray {ray.__version__}")


def check_offline(home: Path | None = None) -> Check:
    """Settings that keep Ray and the Hugging Face hub from reaching out (see usfmae.netguard)."""
    missing = [f"{k}={v}" for k, v in OFFLINE_ENV.items() if os.environ.get(k) != v]
    home = home or Path.home()
    stub = home / RAY_BOOTSTRAP_FILE
    problems = list(missing)
    if not stub.is_file():
        problems.append(f"{stub} (absent: Ray probes cloud metadata servers)")
    if not problems:
        return Check("offline", OK, "telemetry off, no hub look-ups, no cloud-metadata probe")
    # usfmae build-shards/pretrain/finetune set the variables for themselves; `ray start` and a bare
    # `deepspeed launch/pretrain.py` do not, hence the check of the caller's environment.
    fix = (("export " + " ".join(missing) + "; ") if missing else "") + \
        (f"echo '{{}}' > {stub}" if not stub.is_file() else "")
    return Check("offline", WARN, "not firewall-clean: " + ", ".join(problems), fix.strip("; "))


def check_s3(url: str | None, endpoint_url: str | None, timeout: float = 5.0) -> Check:
    """HEAD the bucket and list one key under the prefix (only when a URL is given)."""
    from .data.s3 import ENDPOINT_ENV, split_s3_url

    endpoint_url = endpoint_url or os.environ.get(ENDPOINT_ENV) or None
    if not url:
        return Check("s3", SKIP, "not checked (no --s3 URL, no $USFMAE_S3_URL)",
                     "usfmae doctor --s3 s3://bucket/prefix [--endpoint-url URL]")
    import boto3
    import botocore.exceptions as bexc
    from botocore.config import Config

    try:
        bucket, prefix = split_s3_url(url)
    except ValueError as err:
        return Check("s3", FAIL, str(err), "pass --s3 s3://bucket/prefix")
    where = endpoint_url or "AWS"
    session = boto3.session.Session()
    creds = session.get_credentials()
    if creds is None:
        return Check("s3", FAIL, f"no credentials found for {where}",
                     "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role")
    cfg = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
    client = session.client("s3", endpoint_url=endpoint_url, config=cfg)
    try:
        client.head_bucket(Bucket=bucket)
        listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0)
    except bexc.ClientError as err:
        code = err.response.get("Error", {}).get("Code", "?")
        fix = {"404": f"create the bucket {bucket!r} or fix the URL", "NoSuchBucket": f"create the bucket {bucket!r}",
               "403": "the credentials lack s3:ListBucket on this bucket"}.get(code, "check bucket, policy and keys")
        return Check("s3", FAIL, f"{where}: s3://{bucket} answered {code} (credentials: {creds.method})", fix)
    except (bexc.BotoCoreError, OSError) as err:
        return Check("s3", FAIL, f"{where} unreachable: {type(err).__name__}: {err}",
                     f"check --endpoint-url / ${ENDPOINT_ENV}, proxy and firewall rules")
    state = "has objects" if listed else "is empty"
    return Check("s3", OK, f"{where}: {url} {state} (credentials: {creds.method})")


def existing_parent(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def check_disk(output: Path, warn_gib: float = 20.0, fail_gib: float = 1.0) -> Check:
    """Free space where runs are written (checkpoints of ViT-B MAE with Adam states are ~1.3 GB each)."""
    where = existing_parent(output)
    free = shutil.disk_usage(where).free / GIB
    detail = f"{free:.1f} GiB free in {where}"
    fix = "free space, or write runs elsewhere (--output / checkpoint.keep_last)"
    if free < fail_gib:
        return Check("disk", FAIL, detail, fix)
    if free < warn_gib:
        return Check("disk", WARN, detail + f" (< {warn_gib:g} GiB)", fix)
    return Check("disk", OK, detail)


def check_shm(path: Path = Path("/dev/shm"), warn_gib: float = 2.0) -> Check:
    """DataLoader workers, NCCL and Ray's object store live in /dev/shm; Docker's default is 64 MB."""
    fix = "docker run --shm-size=16g (or --ipc=host); on Kubernetes mount an emptyDir with medium: Memory"
    if not path.is_dir():
        return Check("/dev/shm", WARN, f"{path} does not exist", fix)
    usage = shutil.disk_usage(path)
    detail = f"{usage.total / GIB:.1f} GiB ({usage.free / GIB:.1f} free)"
    if usage.total / GIB < warn_gib:
        return Check("/dev/shm", WARN, detail + f" (< {warn_gib:g} GiB)", fix)
    return Check("/dev/shm", OK, detail)


def run_checks(output: Path = Path("."), s3_url: str | None = None, endpoint_url: str | None = None) -> list[Check]:
    """Every check, in table order; a check that crashes is reported as FAIL with its error."""
    checks = [("tesseract", check_tesseract), ("tesseract-api", check_tesseract_api), ("torch", check_torch),
              ("cuda", check_cuda), ("nccl", check_nccl),
              ("deepspeed", check_deepspeed), ("deepspeed ops", check_deepspeed_ops), ("ray", check_ray),
              ("offline", check_offline), ("s3", lambda: check_s3(s3_url, endpoint_url)),
              ("disk", lambda: check_disk(output)), ("/dev/shm", check_shm)]
    results = []
    for name, check in checks:
        try:
            results.append(check())
        except Exception as err:  # the doctor reports, it does not crash
            results.append(Check(name, FAIL, f"check crashed: {type(err).__name__}: {err}", "see the error"))
    return results


def format_table(checks: list[Check]) -> str:
    """Aligned columns check | status | detail, then the fix (long) last."""
    rows = [("check", "status", "detail", "fix")] + [(c.name, c.status, c.detail, c.fix or "-") for c in checks]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    rows.insert(1, tuple("-" * w for w in widths) + ("---",))
    return "\n".join("  ".join(row[i].ljust(widths[i]) for i in range(3)) + "  " + row[3] for row in rows)

