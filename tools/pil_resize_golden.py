#!/usr/bin/env python3
"""Golden values for Tests/AugmentTests/PILResizeGoldenTests.swift from Pillow's own resampler.

torchvision's RandomResizedCrop on a PIL image is `img.crop(box).resize(size, BILINEAR)`: the
crop first, so no pixel outside the box enters the filter. Images are float32 (mode "F"), so no
8-bit rounding enters. Prints one Swift `PILCase` per case (pip install pillow numpy).
"""
import numpy as np
from PIL import Image

rng = np.random.default_rng(2024)


def image(h, w):
    return (np.round(rng.random((h, w), dtype=np.float32) * 255) / 255).astype(np.float32)


def case(name, a, box, out_w, out_h):
    top, left, bh, bw = box
    cropped = Image.fromarray(a, mode="F").crop((left, top, left + bw, top + bh))
    out = np.asarray(cropped.resize((out_w, out_h), Image.BILINEAR), dtype=np.float32)
    h, w = a.shape
    fmt = lambda v: ", ".join(repr(float(x)) for x in v.reshape(-1))
    print(f'        PILCase(name: "{name}", width: {w}, height: {h},')
    print(f'                box: CropBox(top: {top}, left: {left}, height: {bh}, width: {bw}),')
    print(f'                outputWidth: {out_w}, outputHeight: {out_h},')
    print(f'                input: [{fmt(a)}],')
    print(f'                output: [{fmt(out)}]),')


a1, a2, a3, a4 = image(5, 7), image(3, 5), image(16, 20), image(16, 20)
case("downscale 7×5 → 4×3", a1, (0, 0, 5, 7), 4, 3)
case("upscale 5×3 → 8×7", a2, (0, 0, 3, 5), 8, 7)
case("crop (3, 2, 13×11) of 20×16 → 6×5", a3, (2, 3, 11, 13), 6, 5)
case("crop (5, 4, 7×9) of 20×16 → 10×12 (upscale at an offset)", a4, (4, 5, 9, 7), 10, 12)
