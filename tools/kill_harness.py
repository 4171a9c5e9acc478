"""kill -9 anywhere: `mocov3-cl pretrain` killed with SIGKILL at seeded random moments, resumed
with `--resume auto` each time, must end bit-identical to an uninterrupted run.

A tiny configuration (a CIFAR-100-format folder of 192 + 64 images, a 1-block ViT, batch 32,
8 epochs of 6 iterations, a mid-epoch save every 2 iterations, the kNN evaluation every epoch)
runs once straight; then the same run is killed `--kills` times, cycling through three kinds of
moment:
  - "time": a random delay after the start (0.3–1.2 s: start-up, data, the first iterations);
  - "checkpoint write": the instant a checkpoint's temporary file appears in the run folder;
  - "evaluation": a few milliseconds after an epoch-end checkpoint is logged (its evaluation
    follows the save);
and resumed with `--resume auto` after each kill, then run to the end. Checked: every tensor of
the final checkpoint (weights, BN buffers, optimizer state, the kNN monitor's bank, the gradient
monitor's history) byte for byte; metrics.jsonl line by line on every field but the timings,
with no duplicated, missing or torn line. Prints one JSON summary line; exits 1 on a mismatch.

    python3 tools/kill_harness.py --binary .build/debug/mocov3-cl [--kills 10] [--seed 1] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_cifar import write as write_dataset  # noqa: E402

TIMING_FIELDS = {"images_per_second", "data_seconds", "seconds"}
EPOCHS = 8


def flags(binary: str, data: str, output: str) -> list[str]:
    return [binary, "pretrain", "--device", "host", "--data", data, "--output", output, "--epochs", str(EPOCHS), "-b", "32",
            "--image-size", "32", "--patch-size", "8", "--embed-dim", "32", "--depth", "1", "--heads", "2",
            "--moco-mlp-dim", "64", "--moco-dim", "32", "--knn-bank", "64", "--knn-k", "20", "-j", "1",
            "--save-every", "2", "--keep", "2", "--seed", "1", "-p", "1"]


def tensors(path: str) -> dict[str, bytes]:
    """Every tensor of a safetensors file as raw bytes (the metadata left out: it records the
    metrics file's length, whose timing fields differ)."""
    with open(path, "rb") as f:
        blob = f.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    start = 8 + length
    return {name: blob[start + entry["data_offsets"][0]:start + entry["data_offsets"][1]]
            for name, entry in header.items() if name != "__metadata__"}


def metrics(folder: str) -> list[str]:
    """metrics.jsonl without its timing fields, one canonical line per line; a torn line fails."""
    with open(os.path.join(folder, "metrics.jsonl")) as f:
        text = f.read()
    if text and not text.endswith("\n"):
        raise AssertionError("metrics.jsonl ends in a torn line")
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise AssertionError(f"metrics.jsonl line {number} is not JSON ({error}): {line[:80]}")
        lines.append(json.dumps({k: v for k, v in record.items() if k not in TIMING_FIELDS}, sort_keys=True))
    return lines


def run_and_kill(command: list[str], folder: str, kind: str, delay: float, rng: random.Random) -> str:
    """Starts the command and kills it at the chosen moment; returns what happened."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    killed = threading.Event()
    output: list[str] = []

    def kill() -> None:
        if process.poll() is None:
            process.kill()
            killed.set()

    def watch_output() -> None:
        for line in process.stdout:
            output.append(line)
            if kind == "evaluation" and line.startswith("checkpoint: ") \
                    and re.fullmatch(r"checkpoint_\d{4}\.safetensors", os.path.basename(line.split(": ", 1)[1].strip())):
                time.sleep(rng.uniform(0.0, 0.03))
                kill()

    reader = threading.Thread(target=watch_output, daemon=True)
    reader.start()
    start = time.monotonic()
    while process.poll() is None and time.monotonic() < deadline:
        if kind == "time" and time.monotonic() - start >= delay:
            kill()
        elif kind == "checkpoint write" and os.path.isdir(folder) \
                and any(n.startswith(".checkpoint_") and n.endswith(".tmp") for n in os.listdir(folder)):
            kill()
        time.sleep(0.0005 if kind == "checkpoint write" else 0.005)
    if process.poll() is None:
        process.kill()
        raise AssertionError("a pretrain run did not end within 120 s:\n" + "".join(output[-20:]))
    process.wait()
    reader.join(timeout=5)
    if killed.is_set():
        return "killed"
    if process.returncode != 0:
        raise AssertionError(f"pretrain exited {process.returncode} without being killed:\n" + "".join(output[-30:]))
    return "finished"


def main() -> int:
    ap = argparse.ArgumentParser(description="kill -9 pretrain at random moments; require a bit-identical end")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work")
    args = ap.parse_args()
    work = args.work or tempfile.mkdtemp(prefix="kill-harness-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    write_dataset(data, train=192, test=64, seed=3)
    straight, killed = os.path.join(work, "straight"), os.path.join(work, "killed")
    for folder in (straight, killed):
        shutil.rmtree(folder, ignore_errors=True)

    start = time.monotonic()
    subprocess.run(flags(args.binary, data, straight), check=True, stdout=subprocess.DEVNULL)
    straight_seconds = time.monotonic() - start

    rng = random.Random(args.seed)
    # An evaluation kill waits for the next epoch end, so it comes less often than the others:
    # ten kills fit in the 48 iterations with room to spare.
    kinds = ["time", "checkpoint write", "evaluation", "time", "checkpoint write"]
    events = []
    for index in range(args.kills):
        kind = kinds[index % len(kinds)]
        resume = os.path.isdir(killed) and any(n.startswith("checkpoint_") for n in os.listdir(killed))
        command = flags(args.binary, data, killed) + (["--resume", "auto"] if resume else [])
        delay = rng.uniform(0.3, 1.2)
        outcome = run_and_kill(command, killed, kind, delay, rng)
        events.append({"kind": kind, "delay": round(delay, 3) if kind == "time" else None, "outcome": outcome})
        if outcome == "finished":
            break
    if events[-1]["outcome"] != "finished":
        subprocess.run(flags(args.binary, data, killed) + ["--resume", "auto"], check=True, stdout=subprocess.DEVNULL)

    problems = []
    final = f"checkpoint_{EPOCHS:04d}.safetensors"
    expected, actual = tensors(os.path.join(straight, final)), tensors(os.path.join(killed, final))
    if expected.keys() != actual.keys():
        problems.append(f"tensor names differ: {sorted(expected.keys() ^ actual.keys())[:5]}")
    problems += [f"{name} differs" for name in sorted(expected) if name in actual and expected[name] != actual[name]]
    try:
        straight_lines, killed_lines = metrics(straight), metrics(killed)
        if straight_lines != killed_lines:
            first = next((i for i, (a, b) in enumerate(zip(straight_lines, killed_lines)) if a != b),
                         min(len(straight_lines), len(killed_lines)))
            problems.append(f"metrics.jsonl differs from line {first + 1} ({len(killed_lines)} lines against "
                            f"{len(straight_lines)})")
    except AssertionError as error:
        problems.append(str(error))
    leftovers = [n for n in os.listdir(killed) if n.endswith(".tmp")]
    kills = sum(e["outcome"] == "killed" for e in events)
    if kills < args.kills:
        problems.append(f"only {kills} of {args.kills} kills landed before the run finished")
    summary = {"passed": not problems, "kills": kills, "events": events,
               "tensors_compared": len(expected), "metrics_lines": len(metrics(straight)),
               "straight_seconds": round(straight_seconds, 2), "leftover_temporary_files": leftovers,
               "problems": problems[:10], "work": work}
    print(json.dumps(summary))
    if not args.work and not problems:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
