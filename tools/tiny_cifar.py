"""Writes a small CIFAR-100-format binary folder (train.bin, test.bin, fine_label_names.txt) for the
shell tests (scripts/test-bundle.sh, tools/kill_harness.py): seeded, each class a colour plus noise.

    python3 tools/tiny_cifar.py DIR [--train 512] [--test 128] [--seed 0]
"""

import argparse
import os
import random


def write(root: str, train: int, test: int, seed: int) -> None:
    os.makedirs(root, exist_ok=True)
    rng = random.Random(seed)
    # CIFAR-100 binary records: coarse label, fine label, 3 planes of 32x32.
    for name, count in [("train.bin", train), ("test.bin", test)]:
        with open(os.path.join(root, name), "wb") as f:
            for i in range(count):
                fine = i % 100
                base = [(fine * 37) % 256, (fine * 91) % 256, (fine * 53) % 256]
                f.write(bytes([fine // 5, fine]))
                for plane in range(3):
                    f.write(bytes(min(255, max(0, base[plane] + rng.randint(-40, 40))) for _ in range(1024)))
    with open(os.path.join(root, "fine_label_names.txt"), "w") as f:
        f.write("\n".join(f"class{i}" for i in range(100)) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--train", type=int, default=512)
    ap.add_argument("--test", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    write(args.root, args.train, args.test, args.seed)
