#!/usr/bin/env python3
"""Checks that mocov3-cl's safetensors reader and writer interoperate with PyTorch's
`safetensors` library (here through its numpy API, which shares the Rust core with torch).

Run by hand, not by the Swift tests (they must not need Python):

    pip install safetensors numpy
    python3 tools/safetensors_interop.py write DIR     # numpy writes DIR/numpy.safetensors
    SAFETENSORS_INTEROP_DIR=DIR scripts/test.sh --filter interoperatesWithPythonSafetensors
                                                      # Swift reads it, writes DIR/swift.safetensors
    python3 tools/safetensors_interop.py check DIR     # safetensors reads and verifies ours

The expected values here and in Tests/ModelTests/SafetensorsTests.swift must agree.
"""
import os
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


def write(directory):
    tensors = {
        "f32": (np.arange(12, dtype=np.float32) * 0.5 - 1).reshape(3, 4),
        "f16": np.array([1, -2, 0.5, np.inf, 2.0**-24], dtype=np.float16),
        "i64": np.array([-(2**40), 7, 2**62], dtype=np.int64),
        "i32": np.array([-5, 6], dtype=np.int32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "module.blöck.0.wéight": np.ones(2, dtype=np.float32),
    }
    path = os.path.join(directory, "numpy.safetensors")
    save_file(tensors, path, metadata={"format": "np", "note": "ünï"})
    print(f"wrote {path}")


def check(directory):
    path = os.path.join(directory, "swift.safetensors")
    tensors = load_file(path)
    with safe_open(path, framework="np") as f:
        metadata = f.metadata()
    expected = {
        "weights": (np.arange(6, dtype=np.float32) * 0.25 - 0.5).reshape(2, 3),
        "blöck.✓": np.array(42, dtype=np.float32),
        "labels": np.array([-1, 2**40], dtype=np.int64),
        "i32": np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    failures = []
    if metadata != {"source": "mocov3-cl", "epoch": "3"}:
        failures.append(f"metadata {metadata}")
    if sorted(tensors) != sorted(expected):
        failures.append(f"names {sorted(tensors)}")
    for name, want in expected.items():
        got = tensors.get(name)
        if got is None or got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
            failures.append(f"{name}: got {got!r}, expected {want!r}")
    with open(path, "rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
    if (8 + header_length) % 8:
        failures.append(f"data section starts at {8 + header_length}, not a multiple of 8")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        return 1
    print(f"ok: {path} read by safetensors: {len(tensors)} tensors, metadata {metadata}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit(__doc__)
    sys.exit(write(sys.argv[2]) if sys.argv[1] == "write" else check(sys.argv[2]))
