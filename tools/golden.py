"""Golden fixtures for the Swift MoCo v3 engine, from an independent PyTorch implementation.

What this is
    A small, self-contained PyTorch (CPU, float32) implementation of one MoCo v3 ViT
    pre-training step, written from ../shared/SPEC.md (sections A.1-A.5, A.10) and the
    paper's Algorithm 1, *not* copied from facebookresearch/moco-v3 or timm. It builds a tiny
    model, runs three training steps on two fixed random views and writes every tensor the
    Swift tests need (init weights, views, step-0 outputs and gradients, per-step losses and
    the final weights) into safetensors files under Tests/ModelTests/Fixtures/.

    Tensor names are the reference's DDP checkpoint names (`module.base_encoder.*`,
    `module.momentum_encoder.*`, `module.predictor.*`, SPEC A.10), so the same loader can
    read these fixtures and real checkpoints.

How to run (by hand, not in CI; needs `pip install torch safetensors numpy`)
    python3 tools/golden.py            # from the repository root
    python3 tools/golden.py --pooling avg     # golden_small_avgpool.safetensors
    python3 tools/golden.py --vit-bn          # golden_small_vitbn.safetensors
    python3 tools/golden.py --lincls          # golden_lincls.safetensors (the linear probe)
    python3 tools/golden.py --finetune        # golden_finetune.safetensors (DeiT-style fine-tuning)
    python3 tools/golden.py --finetune --vit-bn   # golden_finetune_vitbn.safetensors
    python3 tools/golden.py --data-parallel   # golden_dp_vitbn.safetensors (2 gloo processes)

    The option runs (the paper's ablations: global average pooling, Sec 5; ViT-BN, Sec 6.1)
    use a smaller model (C = 32, moco_mlp_dim 64, moco_dim 16) so each file stays under 1 MB,
    and write only their own fixture.

    It is deterministic: two runs produce byte-identical files. It prints the checkpoint
    name list once and a loss summary (about 2*2T*ln(8) = 1.66 at init for T = 0.2, B = 8).

The model pieces (ViTMoCo, build_moco, moco_step) are also used by tools/bench_torch_step.py.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import struct
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.distributed as dist
import torch.nn.functional as F

# Dimension letters as in the Swift code: B batch, N tokens (1 + patches), C width,
# H heads, D head dim, P patch size.


@dataclass
class Config:
    img_size: int = 16
    patch_size: int = 4
    embed_dim: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_ratio: int = 4
    moco_dim: int = 32
    moco_mlp_dim: int = 128
    moco_t: float = 0.2
    moco_m: float = 0.99
    lr: float = 1e-3
    weight_decay: float = 0.1
    batch_size: int = 8
    stop_grad_conv1: bool = False
    # "cls": the final-LN class token; "avg": the mean of the final-LN patch tokens (the final
    # LN kept, the class token still present; ViTConfig.Pooling.globalAverage in the Swift code).
    pooling: str = "cls"
    # ViT-BN (paper Sec 6.1): norm2 of every block is a BatchNorm over all B*N tokens of a view.
    vit_bn: bool = False
    seed: int = 0
    steps: int = 3


# ----------------------------------------------------------------------------------------
# ViT backbone (SPEC A.2)


def sincos_pos_embed_2d(grid: int, width: int) -> torch.Tensor:
    """Fixed 2-D sin-cos table, shape (1, 1 + grid*grid, C), cls row zero (SPEC A.2).

    For patch token t (row-major), a = t // grid (row), b = t % grid (column),
    w_k = 10000^(-k/(C/4)), k < C/4:
        pe[t] = [sin(a w), cos(a w), sin(b w), cos(b w)]
    Computed in float32 like the reference.
    """
    assert width % 4 == 0, "embed_dim must be divisible by 4 for the 2-D sin-cos embedding"
    quarter = width // 4
    omega = torch.arange(quarter, dtype=torch.float32) / quarter
    omega = 1.0 / (10000.0 ** omega)                                   # (C/4,)
    t = torch.arange(grid * grid)
    rows = (t // grid).to(torch.float32)                               # (N-1,)
    cols = (t % grid).to(torch.float32)
    ang_r = rows[:, None] * omega[None, :]                             # (N-1, C/4)
    ang_c = cols[:, None] * omega[None, :]
    pe = torch.cat([ang_r.sin(), ang_r.cos(), ang_c.sin(), ang_c.cos()], dim=1)  # (N-1, C)
    pe = torch.cat([torch.zeros(1, width), pe], dim=0)                 # (N, C)
    return pe[None]


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=True)

    def forward(self, x):                                              # (B, 3, S, S)
        x = self.proj(x)                                               # (B, C, S/P, S/P)
        return x.flatten(2).transpose(1, 2)                            # (B, N-1, C), t = row*W + col


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=True)              # rows [Q; K; V], head-major
        self.proj = nn.Linear(width, width, bias=True)

    def forward(self, x):                                              # (B, N, C)
        B, N, C = x.shape
        H = self.heads
        D = C // H
        qkv = self.qkv(x).reshape(B, N, 3, H, D).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = (q @ k.transpose(-2, -1)) * (D ** -0.5)                  # (B, H, N, N)
        att = att.softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, N, C)                 # heads concatenated head-major
        return self.proj(y)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()                                           # exact erf GELU
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TokenBatchNorm(nn.BatchNorm1d):
    """ViT-BN's norm2: BatchNorm1d over every token of the batch, per channel.

    (B, N, C) is seen as (B*N, C) rows; eps 1e-5 and momentum 0.1 are nn.BatchNorm1d's defaults
    (the paper gives none). Names and shapes: weight, bias, running_mean, running_var,
    num_batches_tracked, as any BatchNorm1d.
    """

    def forward(self, x):                                              # (B, N, C)
        B, N, C = x.shape
        return super().forward(x.reshape(B * N, C)).reshape(B, N, C)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: int, vit_bn: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = Attention(width, heads)
        self.norm2 = TokenBatchNorm(width, eps=1e-5, momentum=0.1) if vit_bn else nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, width * mlp_ratio)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


def build_mlp(num_layers: int, in_dim: int, hidden: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    """SPEC A.3: Linear(bias=False) [+ BN + ReLU] per hidden layer; last Linear [+ BN(affine=False)].

    Sequential indices: projector (3 layers) 0 Lin, 1 BN, 2 ReLU, 3 Lin, 4 BN, 5 ReLU, 6 Lin,
    7 BN; predictor (2 layers) 0 Lin, 1 BN, 2 ReLU, 3 Lin, 4 BN (SPEC A.10 names).
    """
    layers: list[nn.Module] = []
    for layer in range(num_layers):
        d_in = in_dim if layer == 0 else hidden
        d_out = out_dim if layer == num_layers - 1 else hidden
        layers.append(nn.Linear(d_in, d_out, bias=False))              # PyTorch default init
        if layer < num_layers - 1:
            layers.append(nn.BatchNorm1d(d_out, eps=1e-5, momentum=0.1))
            layers.append(nn.ReLU(inplace=True))
        elif last_bn:
            layers.append(nn.BatchNorm1d(d_out, eps=1e-5, momentum=0.1, affine=False))
    return nn.Sequential(*layers)


class ViTMoCo(nn.Module):
    """ViT trunk with the MoCo projector as `head` (SPEC A.2, A.3)."""

    def __init__(self, cfg: Config):
        super().__init__()
        C, P = cfg.embed_dim, cfg.patch_size
        assert cfg.img_size % P == 0 and C % cfg.num_heads == 0
        grid = cfg.img_size // P
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C))
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(grid, C), requires_grad=False)
        self.patch_embed = PatchEmbed(P, C)
        self.blocks = nn.ModuleList([Block(C, cfg.num_heads, cfg.mlp_ratio, cfg.vit_bn) for _ in range(cfg.depth)])
        assert cfg.pooling in ("cls", "avg")
        self.pooling = cfg.pooling
        self.norm = nn.LayerNorm(C, eps=1e-6)
        self._init_trunk(cfg)
        # Built after the trunk init, so the heads keep PyTorch's default Linear/BN init.
        self.head = build_mlp(3, C, cfg.moco_mlp_dim, cfg.moco_dim, last_bn=True)

    @torch.no_grad()
    def _init_trunk(self, cfg: Config):
        """SPEC A.2 init table."""
        C, P = cfg.embed_dim, cfg.patch_size
        for blk in self.blocks:
            # qkv: xavier per Q/K/V slice -> U(+-sqrt(6/(C + C))) over the whole (3C, C) weight.
            bound = math.sqrt(6.0 / (C + C))
            nn.init.uniform_(blk.attn.qkv.weight, -bound, bound)
            nn.init.zeros_(blk.attn.qkv.bias)
            for lin in (blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
            for ln in (blk.norm1, blk.norm2):
                nn.init.ones_(ln.weight)
                nn.init.zeros_(ln.bias)
        nn.init.ones_(self.norm.weight)
        nn.init.zeros_(self.norm.bias)
        nn.init.normal_(self.cls_token, std=1e-6)
        # patch projection: fan_in = 3 P^2, fan_out taken as C (not C P^2).
        bound = math.sqrt(6.0 / (3 * P * P + C))
        nn.init.uniform_(self.patch_embed.proj.weight, -bound, bound)
        nn.init.zeros_(self.patch_embed.proj.bias)

    def features(self, x):                                             # (B, 3, S, S) -> (B, C)
        x = self.patch_embed(x)                                        # (B, N-1, C)
        cls = self.cls_token.expand(x.shape[0], -1, -1)                # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + self.pos_embed                # (B, N, C)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        if self.pooling == "avg":
            return x[:, 1:].mean(dim=1)                                # mean of the LN-ed patch tokens
        return x[:, 0]                                                 # LN-ed cls token

    def forward(self, x):
        return self.head(self.features(x))


class MoCo(nn.Module):
    """base_encoder (trunk + projector), momentum_encoder (its EMA copy), predictor (SPEC A.1, A.5)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.group = None                                              # a process group when data parallel
        self.base_encoder = ViTMoCo(cfg)
        # Parameters copied from the base encoder; at init the BN buffers are identical too
        # (mean 0, var 1, count 0). Afterwards buffers are neither copied nor EMA-ed.
        # Registered before the predictor so state_dict order matches the reference checkpoint.
        self.momentum_encoder = copy.deepcopy(self.base_encoder)
        for p in self.momentum_encoder.parameters():
            p.requires_grad_(False)
        self.predictor = build_mlp(2, cfg.moco_dim, cfg.moco_mlp_dim, cfg.moco_dim, last_bn=True)
        if cfg.stop_grad_conv1:
            for p in self.base_encoder.patch_embed.proj.parameters():
                p.requires_grad_(False)

    @torch.no_grad()
    def momentum_update(self, m: float):
        # xi = m*xi + (1-m)*theta over parameters only (frozen pos_embed / patch proj included).
        for p_b, p_m in zip(self.base_encoder.parameters(), self.momentum_encoder.parameters()):
            p_m.mul_(m).add_(p_b, alpha=1.0 - m)

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x1, x2, m: float):
        """The reference's MoCo.forward: EMA, queries, keys, symmetrized loss (SPEC A.1)."""
        T = self.cfg.moco_t
        q1 = self.predictor(self.base_encoder(x1))                     # two calls: BN per view
        q2 = self.predictor(self.base_encoder(x2))
        with torch.no_grad():
            self.momentum_update(m)                                    # first, before the keys
            k1 = self.momentum_encoder(x1)                             # train mode: batch stats
            k2 = self.momentum_encoder(x2)
        group = self.group
        loss = contrastive_loss(q1, k2, T, group) + contrastive_loss(q2, k1, T, group)  # symmetrized sum
        return loss, q1, q2, k1, k2


def contrastive_loss(q: torch.Tensor, k: torch.Tensor, T: float, group=None) -> torch.Tensor:
    """ctr(q, k) = 2T * CE(normalize(q) normalize(k)^T / T, labels) (SPEC A.4).

    One device: labels arange(B). Data parallel (`group` a process group): the keys of every rank
    gathered without gradient (the reference's concat_all_gather), this rank's B/N queries
    against all of them, labels offset by rank * B/N.
    """
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    offset = 0
    if group is not None:
        parts = [torch.empty_like(k) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, k.contiguous(), group=group)
        k = torch.cat(parts, dim=0)
        offset = q.shape[0] * dist.get_rank(group)
    logits = q @ k.t() / T                                             # (B/N, B)
    labels = torch.arange(q.shape[0], device=q.device) + offset
    return F.cross_entropy(logits, labels) * (2.0 * T)


def moco_step(model: MoCo, opt: torch.optim.Optimizer, x1, x2, m: float):
    """One training iteration in the reference order (SPEC A.1). Returns (loss, q1, q2, k1, k2)."""
    loss, q1, q2, k1, k2 = model(x1, x2, m)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss, q1, q2, k1, k2


def build_moco(cfg: Config):
    torch.manual_seed(cfg.seed)
    model = MoCo(cfg)
    model.train()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                            eps=1e-8, weight_decay=cfg.weight_decay)
    return model, opt


# ----------------------------------------------------------------------------------------
# Fixture writing


def checkpoint_state(model: MoCo) -> dict[str, torch.Tensor]:
    """Parameters and buffers under the reference DDP checkpoint names (SPEC A.10)."""
    return {"module." + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def trainable_names(model: MoCo) -> list[str]:
    return ["module." + n for n, p in model.named_parameters() if p.requires_grad]


def expected_names(cfg: Config) -> list[str]:
    """The SPEC A.10 key list, written out independently, to check the Sequential indices."""
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    bn_free = ["running_mean", "running_var", "num_batches_tracked"]
    enc = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(cfg.depth):
        for sub in ["norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"]:
            kinds = bn if sub == "norm2" and cfg.vit_bn else ["weight", "bias"]
            enc += [f"blocks.{i}.{sub}.{kind}" for kind in kinds]
    enc += ["norm.weight", "norm.bias", "head.0.weight"] + [f"head.1.{s}" for s in bn]
    enc += ["head.3.weight"] + [f"head.4.{s}" for s in bn]
    enc += ["head.6.weight"] + [f"head.7.{s}" for s in bn_free]
    pred = ["0.weight"] + [f"1.{s}" for s in bn] + ["3.weight"] + [f"4.{s}" for s in bn_free]
    return ([f"module.base_encoder.{n}" for n in enc] + [f"module.momentum_encoder.{n}" for n in enc]
            + [f"module.predictor.{n}" for n in pred])


def metadata(cfg: Config) -> dict[str, str]:
    # The option keys only where an option is set, so the original fixtures stay byte-identical.
    options = {}
    if cfg.pooling != "cls":
        options["pooling"] = cfg.pooling
    if cfg.vit_bn:
        options["vit_bn"] = "1"
    return options | {
        "img_size": str(cfg.img_size), "patch_size": str(cfg.patch_size),
        "embed_dim": str(cfg.embed_dim), "depth": str(cfg.depth), "num_heads": str(cfg.num_heads),
        "mlp_ratio": str(cfg.mlp_ratio), "moco_dim": str(cfg.moco_dim),
        "moco_mlp_dim": str(cfg.moco_mlp_dim), "stop_grad_conv1": "1" if cfg.stop_grad_conv1 else "0",
        "moco_t": repr(cfg.moco_t), "moco_m": repr(cfg.moco_m), "lr": repr(cfg.lr),
        "weight_decay": repr(cfg.weight_decay), "steps": str(cfg.steps),
        "batch_size": str(cfg.batch_size), "seed": str(cfg.seed),
        "torch_version": torch.__version__, "generator": "tools/golden.py",
    }


def canonicalize_header(path: str):
    """Sort the `__metadata__` keys in place so reruns are byte-identical.

    safetensors (0.8) keeps the metadata in a Rust HashMap, so its key order in the JSON header
    changes from run to run while the tensor bytes do not. Same JSON content, same length.
    """
    with open(path, "r+b") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        raw = fh.read(n)
        header = json.loads(raw)
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        new = json.dumps(header, separators=(",", ":")).encode()
        assert len(new) <= n and json.loads(new) == json.loads(raw)
        fh.seek(8)
        fh.write(new.ljust(n, b" "))                                   # spec: header padded with spaces


def make_views(cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixtures' two views: N(0, 1) images (already normalized) from seed + 1."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    shape = (cfg.batch_size, 3, cfg.img_size, cfg.img_size)
    return torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)


def run_fixture(cfg: Config, path: str, include_init: bool, print_names: bool):
    from safetensors.torch import save_file

    model, opt = build_moco(cfg)
    names_now = list(checkpoint_state(model).keys())
    want = expected_names(cfg)
    assert names_now == want, f"checkpoint names differ from SPEC A.10:\n{names_now}\nvs\n{want}"
    if print_names:
        print(f"# {len(names_now)} checkpoint names (depth {cfg.depth}):")
        for n in names_now:
            print(n)

    # Views: already-normalized images, drawn after the model so the init does not depend on them.
    x1, x2 = make_views(cfg)

    out: dict[str, torch.Tensor] = {"x1": x1.clone(), "x2": x2.clone()}
    init = checkpoint_state(model)
    if include_init:
        out.update({"init." + k: v for k, v in init.items()})

    losses = []
    for t in range(cfg.steps):
        loss, q1, q2, k1, k2 = moco_step(model, opt, x1, x2, cfg.moco_m)
        losses.append(loss.item())
        out[f"step{t}.loss"] = loss.detach().reshape(1).clone()
        if t == 0:
            out.update({"step0.q1": q1.detach().clone(), "step0.q2": q2.detach().clone(),
                        "step0.k1": k1.detach().clone(), "step0.k2": k2.detach().clone()})
            for n, p in model.named_parameters():
                if p.requires_grad:
                    out["step0.grad.module." + n] = p.grad.detach().clone()
    out.update({"final." + k: v for k, v in checkpoint_state(model).items()})

    for k, v in out.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
        assert torch.isfinite(v.to(torch.float64)).all(), k
    save_file(out, path, metadata=metadata(cfg))
    canonicalize_header(path)
    return init, losses, out


# ----------------------------------------------------------------------------------------
# Linear probe (SPEC A.8, main_lincls.py): a frozen trunk in eval mode, a fresh Linear head,
# SGD momentum 0.9 wd 0, cross-entropy, lr set once per epoch by the cosine rule.


def lincls_lr(peak: float, epoch: int, epochs: int) -> float:
    return peak * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def run_lincls(path: str):
    """Two epochs of three batches (5, 5, 3 images: the last one short, as drop_last=False gives)
    through a frozen tiny trunk and a 10-class head, with and without MAE's parameter-free BN
    before the head. Stored: the trunk (timm names, metadata with its configuration), the head's
    init, every batch's images and labels, per-step losses, step-0 logits and features, the final
    head and momentum buffers, the BN head's running statistics and the evaluation-mode logits of
    a held-out batch."""
    from safetensors.torch import save_file

    cfg = Config()
    torch.manual_seed(cfg.seed)
    trunk = ViTMoCo(cfg)
    trunk.eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    state = {k: v.detach().clone().contiguous() for k, v in trunk.state_dict().items() if not k.startswith("head.")}
    classes, width, epochs, peak = 10, cfg.embed_dim, 4, 0.1
    gen = torch.Generator().manual_seed(7)
    head_weight = torch.randn(classes, width, generator=gen) * 0.01
    sizes = [5, 5, 3]
    batches = []
    for epoch in range(2):
        for b, n in enumerate(sizes):
            x = torch.randn(n, 3, cfg.img_size, cfg.img_size, generator=gen)
            y = torch.randint(0, classes, (n,), generator=gen)
            batches.append((epoch, b, x, y))
    val_x = torch.randn(6, 3, cfg.img_size, cfg.img_size, generator=gen)
    val_y = torch.randint(0, classes, (6,), generator=gen)

    out: dict[str, torch.Tensor] = {f"trunk.{k}": v for k, v in state.items()}
    out["head_init.weight"] = head_weight.clone()
    for i, (epoch, b, x, y) in enumerate(batches):
        out[f"batch{i}.x"] = x.clone()
        out[f"batch{i}.y"] = y.to(torch.int64)
    out["val.x"] = val_x.clone()
    out["val.y"] = val_y.to(torch.int64)

    for variant, bn in (("plain", False), ("bn", True)):
        head = nn.Linear(width, classes)
        with torch.no_grad():
            head.weight.copy_(head_weight)
            head.bias.zero_()
        norm = nn.BatchNorm1d(width, affine=False, eps=1e-6) if bn else nn.Identity()
        opt = torch.optim.SGD(head.parameters(), lr=peak, momentum=0.9, weight_decay=0.0)
        for i, (epoch, b, x, y) in enumerate(batches):
            for group in opt.param_groups:
                group["lr"] = lincls_lr(peak, epoch, epochs)
            with torch.no_grad():
                features = trunk.features(x)
            norm.train()
            logits = head(norm(features))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out[f"{variant}.step{i}.loss"] = loss.detach().reshape(1).clone()
            if i == 0:
                out[f"{variant}.step0.logits"] = logits.detach().clone()
                out[f"{variant}.step0.features"] = features.clone()
        out[f"{variant}.final.head.weight"] = head.weight.detach().clone()
        out[f"{variant}.final.head.bias"] = head.bias.detach().clone()
        out[f"{variant}.final.momentum.weight"] = opt.state[head.weight]["momentum_buffer"].clone()
        out[f"{variant}.final.momentum.bias"] = opt.state[head.bias]["momentum_buffer"].clone()
        norm.eval()
        with torch.no_grad():
            out[f"{variant}.val.logits"] = head(norm(trunk.features(val_x))).clone()
        if bn:
            out["bn.final.running_mean"] = norm.running_mean.clone()
            out["bn.final.running_var"] = norm.running_var.clone()
    for k, v in out.items():
        assert torch.isfinite(v.to(torch.float64)).all(), k
    meta = {"img_size": str(cfg.img_size), "patch_size": str(cfg.patch_size), "embed_dim": str(cfg.embed_dim),
            "depth": str(cfg.depth), "num_heads": str(cfg.num_heads), "mlp_ratio": str(cfg.mlp_ratio),
            "classes": str(classes), "epochs": str(epochs), "peak_lr": repr(peak), "batch_sizes": "5,5,3",
            "torch_version": torch.__version__, "generator": "tools/golden.py --lincls"}
    save_file(out, path, metadata=meta)
    canonicalize_header(path)
    print(f"{path}: {os.path.getsize(path)} bytes, {len(out)} tensors")
    for variant in ("plain", "bn"):
        print(f"  {variant}: losses " + " ".join(f"{out[f'{variant}.step{i}.loss'].item():.6f}" for i in range(len(batches))))


# ----------------------------------------------------------------------------------------
# Fine-tuning (paper 6.3-6.4, DeiT's recipe): the whole trunk and a new head, AdamW with timm's
# no-decay group (biases, norms, cls_token; pos_embed frozen), mixup/cutmix soft targets with
# label smoothing, stochastic depth per sample. Written from the papers' definitions.


def trunk_forward_drop_path(trunk: ViTMoCo, x, factors):
    """The trunk with per-sample drop-path factors on each branch: x = x + f[b] * branch(x)."""
    x = trunk.patch_embed(x)
    cls = trunk.cls_token.expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + trunk.pos_embed
    for i, blk in enumerate(trunk.blocks):
        fa, fm = factors[i]
        x = x + fa[:, None, None] * blk.attn(blk.norm1(x))
        x = x + fm[:, None, None] * blk.mlp(blk.norm2(x))
    return trunk.norm(x)[:, 0]


def soft_targets(y, classes, lam, smoothing):
    off = smoothing / classes
    on = 1.0 - smoothing + off
    y1 = torch.full((y.shape[0], classes), off).scatter_(1, y[:, None], on)
    y2 = torch.full((y.shape[0], classes), off).scatter_(1, y.flip(0)[:, None], on)
    return lam * y1 + (1.0 - lam) * y2


def run_finetune(path: str, vit_bn: bool = False):
    """Two AdamW steps of the trunk and a 10-class head on 4 images: step 0 mixup with lambda 0.7,
    step 1 cutmix of rows 3..10, columns 2..9 (lambda 1 - 64/256); block 1 drops paths with the
    stored per-sample factors (rate 0.1: kept samples scaled by 1/0.9), block 0 keeps all. With
    `vit_bn`, norm2 is ViT-BN in training mode (batch statistics, running ones updated), and the
    final running statistics are stored too."""
    from safetensors.torch import save_file

    cfg = Config(vit_bn=vit_bn)
    torch.manual_seed(cfg.seed)
    trunk = ViTMoCo(cfg)
    trunk.train()
    trunk.pos_embed.requires_grad_(False)
    for p in trunk.head.parameters():
        p.requires_grad_(False)
    state = {k: v.detach().clone().contiguous() for k, v in trunk.state_dict().items() if not k.startswith("head.")}
    classes, smoothing, wd = 10, 0.1, 0.05
    gen = torch.Generator().manual_seed(21)
    head = nn.Linear(cfg.embed_dim, classes)
    with torch.no_grad():
        head.weight.copy_(torch.randn(classes, cfg.embed_dim, generator=gen) * 0.02)
        head.bias.zero_()
    out: dict[str, torch.Tensor] = {f"trunk.{k}": v for k, v in state.items()}
    out["head_init.weight"] = head.weight.detach().clone()
    x = torch.randn(4, 3, cfg.img_size, cfg.img_size, generator=gen)
    y = torch.tensor([3, 7, 3, 0])
    out["x"] = x.clone()
    out["y"] = y.clone()
    keep = 1.0 / 0.9
    factors = [(torch.ones(4), torch.ones(4)),
               (torch.tensor([keep, 0.0, keep, keep]), torch.tensor([0.0, keep, keep, keep]))]
    out["drop.attn"] = factors[1][0].clone()
    out["drop.mlp"] = factors[1][1].clone()

    named = [(n, p) for n, p in trunk.named_parameters() if p.requires_grad] + \
            [("head." + n, p) for n, p in head.named_parameters()]
    decay = [p for n, p in named if p.ndim > 1 and n not in ("cls_token", "pos_embed")]
    no_decay = [p for n, p in named if not (p.ndim > 1 and n not in ("cls_token", "pos_embed"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    steps = [("mixup", 0.7, None, 1e-3), ("cutmix", 1.0 - 64.0 / 256.0, (3, 11, 2, 10), 8e-4)]
    for t, (kind, lam, box, lr) in enumerate(steps):
        if kind == "mixup":
            xm = lam * x + (1.0 - lam) * x.flip(0)
        else:
            top, bottom, left, right = box
            xm = x.clone()
            xm[:, :, top:bottom, left:right] = x.flip(0)[:, :, top:bottom, left:right]
        targets = soft_targets(y, classes, lam, smoothing)
        out[f"step{t}.x"] = xm.clone()
        out[f"step{t}.targets"] = targets.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        logits = head(trunk_forward_drop_path(trunk, xm, factors))
        loss = torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        if t == 0:
            out["step0.logits"] = logits.detach().clone()
            for n, p in named:
                out["step0.grad." + n] = p.grad.detach().clone()
        opt.step()
        out[f"step{t}.loss"] = loss.detach().reshape(1).clone()
    for n, p in named:
        out["final." + n] = p.detach().clone()
    if vit_bn:
        for k, v in trunk.state_dict().items():
            if ".norm2.running_" in k:
                out["final." + k] = v.detach().clone()
    meta = {"img_size": str(cfg.img_size), "patch_size": str(cfg.patch_size), "embed_dim": str(cfg.embed_dim),
            "depth": str(cfg.depth), "num_heads": str(cfg.num_heads), "mlp_ratio": str(cfg.mlp_ratio),
            "classes": str(classes), "smoothing": repr(smoothing), "weight_decay": repr(wd), "lrs": "1e-3,8e-4",
            **({"vit_bn": "1"} if vit_bn else {}),
            "torch_version": torch.__version__, "generator": "tools/golden.py --finetune"}
    for k, v in out.items():
        assert torch.isfinite(v.to(torch.float64)).all(), k
    save_file(out, path, metadata=meta)
    canonicalize_header(path)
    print(f"{path}: {os.path.getsize(path)} bytes, {len(out)} tensors; losses "
          + " ".join(f"{out[f'step{t}.loss'].item():.6f}" for t in range(len(steps))))


# ----------------------------------------------------------------------------------------
# Data parallel (SPEC A.1/A.3/A.4 with DDP): N processes on gloo, each with B/N rows of every
# view; keys all-gathered without gradient, labels offset by rank; SyncBN in the projector,
# the predictor and ViT-BN's norm2; gradients averaged by DistributedDataParallel.
# torch's nn.SyncBatchNorm runs on GPUs only, so the SyncBN here is written out (below).


class _SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode BatchNorm over the rows of every rank, as nn.SyncBatchNorm computes it.

    Forward: the global mean, then the global biased variance (two all-reduces, float64), the
    running statistics updated with the unbiased variance of all rows. Backward: the input
    gradient needs the global sums of g and g*xhat (g = dy*weight), all-reduced; the affine
    gradients are this rank's sums (DDP averages them with the rest).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, bn, group):                      # x (R, C)
        n = torch.tensor([x.shape[0]], dtype=torch.float64)
        dist.all_reduce(n, group=group)
        xd = x.double()
        mean = xd.sum(0)
        dist.all_reduce(mean, group=group)
        mean /= n
        var = ((xd - mean) ** 2).sum(0)
        dist.all_reduce(var, group=group)
        var /= n
        rstd = (var + bn.eps).rsqrt()
        xhat = (xd - mean) * rstd
        y = xhat if weight is None else xhat * weight.double() + bias.double()
        with torch.no_grad():
            bn.running_mean.mul_(1 - bn.momentum).add_(bn.momentum * mean.float())
            bn.running_var.mul_(1 - bn.momentum).add_(bn.momentum * (var * n / (n - 1)).float())
            bn.num_batches_tracked.add_(1)
        ctx.save_for_backward(xhat, rstd, n, weight)
        ctx.group = group
        return y.float()

    @staticmethod
    def backward(ctx, dy):
        xhat, rstd, n, weight = ctx.saved_tensors
        dyd = dy.double()
        g = dyd if weight is None else dyd * weight.double()
        sums = torch.stack([g.sum(0), (g * xhat).sum(0)])
        dist.all_reduce(sums, group=ctx.group)
        dx = rstd * (g - sums[0] / n - xhat * sums[1] / n)
        dweight = None if weight is None else (dyd * xhat).sum(0).float()
        dbias = None if weight is None else dyd.sum(0).float()
        return dx.float(), dweight, dbias, None, None


class SyncBatchNorm1d(nn.BatchNorm1d):
    """A BatchNorm1d whose training-mode statistics are over every rank's rows (same names)."""

    group = None

    def forward(self, x):                                              # (R, C)
        if not self.training:
            return super().forward(x)
        return _SyncBatchNormFunction.apply(x, self.weight, self.bias, self, self.group)


class SyncTokenBatchNorm(TokenBatchNorm, SyncBatchNorm1d):
    """ViT-BN's norm2 synchronised: TokenBatchNorm's (B*N, C) view through SyncBatchNorm1d."""


def convert_sync_batch_norm(model: nn.Module, group):
    """Every BatchNorm1d of `model` becomes synchronised over `group`, in place (same state)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.__class__ = SyncTokenBatchNorm if isinstance(module, TokenBatchNorm) else SyncBatchNorm1d
            module.group = group


def _data_parallel_rank(rank: int, world: int, cfg: Config, init_file: str, result_file: str):
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
    model, opt = build_moco(cfg)                                       # same seed: same init on every rank
    bn_group = dist.new_group()                                        # SyncBN's reductions apart from DDP's
    convert_sync_batch_norm(model, bn_group)
    model.group = dist.new_group()                                     # the keys' all-gather
    ddp = DistributedDataParallel(model)
    x1, x2 = make_views(cfg)                                           # the one-process fixture's views
    local = cfg.batch_size // world
    rows = slice(rank * local, (rank + 1) * local)
    out: dict[str, torch.Tensor] = {"x1": x1.clone(), "x2": x2.clone()}
    for t in range(cfg.steps):
        loss, *_ = ddp(x1[rows], x2[rows], cfg.moco_m)
        opt.zero_grad()
        loss.backward()                                                # DDP: gradients averaged over ranks
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        out[f"step{t}.loss"] = (mean / world).reshape(1)               # the global batch's loss
        if t == 0:
            for name, p in model.named_parameters():
                if p.requires_grad:
                    out["step0.grad.module." + name] = p.grad.detach().clone()
        opt.step()
    out.update({"final." + k: v for k, v in checkpoint_state(model).items()})
    # Every rank holds the same weights (the same averaged gradients); say so, then rank 0 writes.
    digest = torch.tensor([sum(float(v.double().sum()) for v in out.values())], dtype=torch.float64)
    gathered = [torch.empty_like(digest) for _ in range(world)]
    dist.all_gather(gathered, digest)
    assert all(torch.equal(g, digest) for g in gathered), "ranks diverged"
    if rank == 0:
        torch.save(out, result_file)
    dist.destroy_process_group()


def run_data_parallel(path: str, world: int = 2):
    """The ViT-BN small model (SyncBN in every norm2, the projector and the predictor) trained
    for 3 steps on `world` gloo processes at the global batch of golden_small_vitbn (8), from
    the same init and views; the result is checked against the one-process run here."""
    import tempfile
    import torch.multiprocessing as mp
    from safetensors.torch import save_file

    cfg = Config(embed_dim=32, moco_mlp_dim=64, moco_dim=16, vit_bn=True)
    assert cfg.batch_size % world == 0
    with tempfile.TemporaryDirectory() as tmp:
        init_file, result_file = os.path.join(tmp, "init"), os.path.join(tmp, "result.pt")
        mp.spawn(_data_parallel_rank, args=(world, cfg, init_file, result_file), nprocs=world, join=True)
        out = torch.load(result_file)

    # The same run in one process (plain BatchNorm over all 8 rows): the data-parallel run must
    # be it, up to float rounding, or this fixture would encode a different algorithm.
    model, opt = build_moco(cfg)
    x1, x2 = make_views(cfg)
    assert torch.equal(x1, out["x1"]) and torch.equal(x2, out["x2"])
    single = [moco_step(model, opt, x1, x2, cfg.moco_m)[0].item() for _ in range(cfg.steps)]
    for t, l in enumerate(single):
        assert abs(out[f"step{t}.loss"].item() - l) <= 1e-5 * abs(l), (t, out[f"step{t}.loss"].item(), l)
    worst = max((out["final." + k].double() - v.double()).abs().max().item()
                for k, v in checkpoint_state(model).items() if v.dtype == torch.float32)
    for k, v in out.items():
        assert v.dtype in (torch.float32, torch.int64), (k, v.dtype)
        assert torch.isfinite(v.to(torch.float64)).all(), k
    meta = metadata(cfg) | {"ranks": str(world), "generator": "tools/golden.py --data-parallel"}
    save_file(out, path, metadata=meta)
    canonicalize_header(path)
    print(f"{path}: {os.path.getsize(path)} bytes, {len(out)} tensors, {world} ranks; losses "
          + " ".join(f"{out[f'step{t}.loss'].item():.6f}" for t in range(cfg.steps))
          + f"; one process: " + " ".join(f"{l:.6f}" for l in single)
          + f"; final weights within {worst:.2e} of one process's")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "..", "Tests", "ModelTests", "Fixtures"))
    ap.add_argument("--pooling", choices=["cls", "avg"], default="cls",
                    help="feature pooling; 'avg' writes golden_small_avgpool*.safetensors only")
    ap.add_argument("--vit-bn", action="store_true",
                    help="BatchNorm as norm2 (ViT-BN); writes golden_small_*vitbn.safetensors only")
    ap.add_argument("--lincls", action="store_true", help="the linear probe; writes golden_lincls.safetensors only")
    ap.add_argument("--finetune", action="store_true", help="fine-tuning; writes golden_finetune.safetensors only")
    ap.add_argument("--data-parallel", action="store_true",
                    help="2 gloo processes, SyncBN, gathered keys; writes golden_dp_vitbn.safetensors only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out_dir, exist_ok=True)

    if args.lincls:
        run_lincls(os.path.join(args.out_dir, "golden_lincls.safetensors"))
        return
    if args.data_parallel:
        run_data_parallel(os.path.join(args.out_dir, "golden_dp_vitbn.safetensors"))
        return
    if args.finetune:
        name = "golden_finetune_vitbn.safetensors" if args.vit_bn else "golden_finetune.safetensors"
        run_finetune(os.path.join(args.out_dir, name), vit_bn=args.vit_bn)
        return

    if args.pooling != "cls" or args.vit_bn:
        cfg = Config(embed_dim=32, moco_mlp_dim=64, moco_dim=16, pooling=args.pooling, vit_bn=args.vit_bn)
        stem = "_".join(n for n, on in (("avgpool", args.pooling == "avg"), ("vitbn", args.vit_bn)) if on)
        path = os.path.join(args.out_dir, f"golden_small_{stem}.safetensors")
        _, losses, out = run_fixture(cfg, path, include_init=True, print_names=False)
        print(f"{path}: {os.path.getsize(path)} bytes, {len(out)} tensors")
        for t, l in enumerate(losses):
            print(f"  step{t}.loss = {l:.8f}")
        return

    cfg = Config()
    path = os.path.join(args.out_dir, "golden_tiny.safetensors")
    init, losses, out = run_fixture(cfg, path, include_init=True, print_names=True)
    n_grad = sum(1 for k in out if k.startswith("step0.grad."))
    print(f"\n{path}: {os.path.getsize(path)} bytes, {len(out)} tensors ({n_grad} gradients)")
    print(f"  expected init loss ~ 2*2T*ln(B) = {4 * cfg.moco_t * math.log(cfg.batch_size):.6f}")
    for t, l in enumerate(losses):
        print(f"  step{t}.loss = {l:.8f}")
    g = out["step0.grad.module.base_encoder.norm.bias"]
    print(f"  |grad norm.bias|max = {g.abs().max().item():.3e} (analytically 0, SPEC A.2)")

    sg = Config(stop_grad_conv1=True)
    path_sg = os.path.join(args.out_dir, "golden_tiny_stopgrad.safetensors")
    init_sg, losses_sg, out_sg = run_fixture(sg, path_sg, include_init=False, print_names=False)
    # The stop-grad fixture stores no init.*: it is the same as golden_tiny's (same seed and
    # construction order); check that so the shared init is a fact, not a hope.
    assert init.keys() == init_sg.keys() and all(torch.equal(init[k], init_sg[k]) for k in init)
    w0 = init["module.base_encoder.patch_embed.proj.weight"]
    assert torch.equal(out_sg["final.module.base_encoder.patch_embed.proj.weight"], w0)
    assert "step0.grad.module.base_encoder.patch_embed.proj.weight" not in out_sg
    n_grad = sum(1 for k in out_sg if k.startswith("step0.grad."))
    print(f"\n{path_sg}: {os.path.getsize(path_sg)} bytes, {len(out_sg)} tensors ({n_grad} gradients)")
    for t, l in enumerate(losses_sg):
        print(f"  step{t}.loss = {l:.8f}")


if __name__ == "__main__":
    main()
