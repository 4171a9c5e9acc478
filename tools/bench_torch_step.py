"""Time one MoCo v3 ViT training step in PyTorch (CPU, or CUDA with --device cuda): the baseline
for the Swift engine.

The step is the same code that writes the golden fixtures (tools/golden.py: EMA update, two
query forwards, two key forwards, symmetrized 2T-scaled InfoNCE, backward, AdamW), in float32
with the reference's default heads (moco_mlp_dim 4096, moco_dim 256) unless told otherwise.
On CUDA the step stays float32 as ours: TF32 is off for matmuls and convolutions unless --tf32
(PyTorch allows it for convolutions by default). One untimed warm-up step, then --steps timed
steps; prints one JSON line:

    {"images_per_second": ..., "median_step_seconds": ..., ...}

where an image is one sample of the batch (each step runs both of its views).

    python3 tools/bench_torch_step.py --embed-dim 192 --depth 12 --heads 3 \\
        --image-size 32 --patch-size 4 --batch-size 128 --steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import Config, build_moco, moco_step  # noqa: E402


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench(cfg: Config, steps: int, threads: int, device: str = "cpu", tf32: bool = False) -> dict:
    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    model, opt = build_moco(cfg)
    model.to(device)                       # in place: the optimizer's parameters move with it
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    shape = (cfg.batch_size, 3, cfg.img_size, cfg.img_size)
    x1 = torch.randn(shape, generator=gen).to(device)
    x2 = torch.randn(shape, generator=gen).to(device)
    moco_step(model, opt, x1, x2, cfg.moco_m)                          # warm-up, untimed
    times = []
    cpu = _cpu_seconds()
    for _ in range(steps):
        t0 = time.perf_counter()
        loss, *_ = moco_step(model, opt, x1, x2, cfg.moco_m)
        loss.item()                        # waits for the step (a CUDA synchronisation)
        times.append(time.perf_counter() - t0)
    cpu = _cpu_seconds() - cpu
    med = statistics.median(times)
    return {
        "cpu_time_per_wall": cpu / sum(times),                         # over the timed steps, every thread
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "images_per_second": cfg.batch_size / med,
        "median_step_seconds": med,
        "step_seconds": times,
        "embed_dim": cfg.embed_dim, "depth": cfg.depth, "heads": cfg.num_heads,
        "image_size": cfg.img_size, "patch_size": cfg.patch_size, "batch_size": cfg.batch_size,
        "moco_mlp_dim": cfg.moco_mlp_dim, "moco_dim": cfg.moco_dim, "threads": threads,
        "torch_version": torch.__version__, "final_loss": loss.item(), "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "tf32": tf32 if device.startswith("cuda") else False,
        "peak_device_memory_bytes": torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else None,
    }


def main():
    ap = argparse.ArgumentParser(description="Time a MoCo v3 ViT step in PyTorch (CPU or CUDA, fp32).")
    ap.add_argument("--embed-dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--patch-size", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--moco-mlp-dim", type=int, default=4096)
    ap.add_argument("--moco-dim", type=int, default=256)
    ap.add_argument("--stop-grad-conv1", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda / cuda:N")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA (off: float32 as ours)")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be at least 1")
    cfg = Config(img_size=args.image_size, patch_size=args.patch_size, embed_dim=args.embed_dim,
                 depth=args.depth, num_heads=args.heads, moco_dim=args.moco_dim,
                 moco_mlp_dim=args.moco_mlp_dim, batch_size=args.batch_size,
                 stop_grad_conv1=args.stop_grad_conv1, lr=1.5e-4 * args.batch_size / 256)
    print(json.dumps(bench(cfg, args.steps, args.threads, args.device, args.tf32)))


if __name__ == "__main__":
    main()
