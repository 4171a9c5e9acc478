"""Checks a `mocov3-cl export --format timm` file against timm itself.

What this does
    Builds timm's `VisionTransformer` from the architecture in the exported file's metadata
    (MoCo v3's head count included: the shapes cannot tell it), loads the weights with
    `strict=True` (every name and shape must match timm's own model), runs the images that
    `mocov3-cl embed --save-inputs K` stored, and compares timm's pre-logits features with the
    features mocov3-cl computed for the same images.

How to run (by hand; needs `pip install torch timm safetensors`)
    mocov3-cl export --checkpoint runs/pretrain/checkpoint_0003.safetensors --format timm --output vit.safetensors
    mocov3-cl embed --checkpoint vit.safetensors --save-inputs 256 --output features.safetensors
    python3 tools/timm_check.py vit.safetensors features.safetensors

Exit status 0 when every feature agrees within the tolerance (default 1e-5 relative to the
largest feature magnitude of its row, plus 1e-6).
"""

import argparse
import json
import sys

import torch
import timm
from timm.models.vision_transformer import VisionTransformer
from safetensors import safe_open
from safetensors.torch import load_file


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", help="a mocov3-cl export --format timm file")
    ap.add_argument("features", help="a mocov3-cl embed --save-inputs K file made from the same weights")
    ap.add_argument("--rtol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(1)

    with safe_open(args.weights, framework="pt") as f:
        meta = f.metadata() or {}
    notes = meta.get("mocov3_notes")
    if notes:
        print("note from the exporter:", notes)
    state = load_file(args.weights)
    classes = state["head.weight"].shape[0] if "head.weight" in state else 0
    model = VisionTransformer(
        img_size=int(meta["img_size"]), patch_size=int(meta["patch_size"]), in_chans=3, num_classes=classes,
        global_pool="token", embed_dim=int(meta["embed_dim"]), depth=int(meta["depth"]),
        num_heads=int(meta["num_heads"]), mlp_ratio=float(meta["mlp_ratio"]), qkv_bias=True)
    model.load_state_dict(state, strict=True)   # every name and shape must be timm's
    model.eval()

    data = load_file(args.features)
    x = data["inputs"]
    ours = data["features"][: x.shape[0]]
    with torch.no_grad():
        theirs = model.forward_head(model.forward_features(x), pre_logits=True)
    scale = ours.abs().amax(dim=1, keepdim=True)
    error = (theirs - ours).abs() / (scale + 1e-12)
    worst = error.max().item()
    ok = bool(((theirs - ours).abs() <= args.rtol * scale + 1e-6).all())
    print(json.dumps({"timm": timm.__version__, "torch": torch.__version__, "images": x.shape[0],
                      "width": ours.shape[1], "num_heads": int(meta["num_heads"]),
                      "worst_relative_error": worst, "max_abs_error": (theirs - ours).abs().max().item(),
                      "passed": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
