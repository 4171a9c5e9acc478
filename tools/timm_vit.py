"""Writes a timm ViT as a user would have it, for the import test of `lincls`/`finetune --pretrained`.

What this is
    timm's own `VisionTransformer` (not our golden.py model), randomly initialised by timm
    (learned, truncated-normal position embedding; a 10-class head), saved with safetensors'
    `save_file` exactly as `timm`/`huggingface_hub` store weights: the state_dict's names and no
    configuration metadata, so the importer must infer the shape from the tensors and take the
    head count from --heads. A second file holds fixed inputs and what timm computes for them:
    the pre-logits feature (`forward_head(..., pre_logits=True)`: the final-LN class token) and
    the logits.

How to run (by hand, not in CI; needs `pip install torch timm safetensors`)
    python3 tools/timm_vit.py     # Tests/ModelTests/Fixtures/timm_vit.safetensors, timm_vit_expected.safetensors
"""

import os

import torch
import timm
from timm.models.vision_transformer import VisionTransformer
from safetensors.torch import save_file


def main():
    out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "ModelTests", "Fixtures")
    torch.manual_seed(3)
    torch.set_num_threads(1)
    # 2 heads on a 64-wide trunk: neither golden.py's 4 nor any default, so only --heads can say it.
    model = VisionTransformer(img_size=16, patch_size=4, in_chans=3, num_classes=10, global_pool="token",
                              embed_dim=64, depth=2, num_heads=2, mlp_ratio=4.0, qkv_bias=True)
    model.eval()
    # timm initialises the head to zeros; give it values so the imported head is checked too.
    with torch.no_grad():
        model.head.weight.normal_(0, 0.02)
        model.head.bias.normal_(0, 0.02)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out_dir, "timm_vit.safetensors"), metadata={"format": "pt"})
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(5, 3, 16, 16, generator=gen)
    with torch.no_grad():
        tokens = model.forward_features(x)
        features = model.forward_head(tokens, pre_logits=True)
        logits = model(x)
    save_file({"x": x, "features": features.contiguous(), "logits": logits.contiguous()},
              os.path.join(out_dir, "timm_vit_expected.safetensors"),
              metadata={"timm_version": timm.__version__, "torch_version": torch.__version__,
                        "generator": "tools/timm_vit.py"})
    print("timm", timm.__version__, "tensors:", ", ".join(state.keys()))


if __name__ == "__main__":
    main()
