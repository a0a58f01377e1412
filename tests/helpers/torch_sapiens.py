"""An independent PyTorch reference of the Sapiens models, built from plain ``torch.nn`` layers.

Module names reproduce the Sapiens / mmpretrain / mmpose / mmseg state-dict keys exactly
(docs/design.md §2-3), so ``model.load_state_dict(sd, strict=True)`` is the real compatibility
check for exported checkpoints. Inputs are NCHW; outputs NCHW. Nothing here imports the Flax code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCHS = {  # name: (embed_dims, num_layers, num_heads, pose_ch, depth_ch, normal_ch[, patch_size])
    "tiny": (64, 4, 4, 32, 16, 32),
    "cpu": (160, 6, 4, 64, 16, 32),
    "cpu_p8": (160, 6, 4, 64, 16, 32, 8),
    "sapiens_0.3b": (1024, 24, 16, 768, 384, 768),
    "sapiens_0.6b": (1280, 32, 16, 768, 384, 768),
    "sapiens_1b": (1536, 40, 24, 768, 384, 768),
    "sapiens_2b": (1920, 48, 32, 768, 384, 768),
}


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * (d // self.num_heads) ** -0.5
        out = attn.softmax(dim=-1) @ v  # (B, N, T, Dh)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class FFN(nn.Module):
    """mmcv FFN: layers = Sequential(Sequential(Linear, GELU, Dropout), Linear, Dropout)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0)), nn.Linear(hidden, dim), nn.Dropout(0.0)
        )

    def forward(self, x):
        return self.layers(x)


class Block(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ln2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = FFN(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


def patch_size(arch: str) -> int:
    return ARCHS[arch][6] if len(ARCHS[arch]) > 6 else 16


class PatchEmbed(nn.Module):
    def __init__(self, dim, padding, patch=16):
        super().__init__()
        self.projection = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, padding=padding)

    def forward(self, x):
        return self.projection(x)


class ViT(nn.Module):
    def __init__(self, arch, image_size, patch_padding=2):
        super().__init__()
        dim, layers, heads = ARCHS[arch][:3]
        p = patch_size(arch)
        self.grid = (image_size[0] // p, image_size[1] // p)
        self.patch_embed = PatchEmbed(dim, patch_padding, p)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], dim))
        self.layers = nn.ModuleList([Block(dim, heads) for _ in range(layers)])
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x = self.patch_embed(x)
        b, d, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + self.pos_embed
        for layer in self.layers:
            x = layer(x)
        x = self.ln1(x)
        return x.transpose(1, 2).reshape(b, d, h, w)


def _deconvs(in_ch, out_ch, n):
    layers = []
    for _ in range(n):
        layers += [
            nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, output_padding=0, bias=False),
            nn.InstanceNorm2d(out_ch),
            nn.SiLU(),
        ]
        in_ch = out_ch
    return nn.Sequential(*layers)


def _convs(ch, n):
    layers = []
    for _ in range(n):
        layers += [nn.Conv2d(ch, ch, 1), nn.InstanceNorm2d(ch), nn.SiLU()]
    return nn.Sequential(*layers)


class HeatmapHead(nn.Module):
    def __init__(self, in_ch, ch, num_keypoints, n_deconv=2):
        super().__init__()
        self.deconv_layers = _deconvs(in_ch, ch, n_deconv)
        self.conv_layers = _convs(ch, 2)
        self.final_layer = nn.Conv2d(ch, num_keypoints, 1)

    def forward(self, x):
        return self.final_layer(self.conv_layers(self.deconv_layers(x)))


class DecodeHead(nn.Module):
    def __init__(self, in_ch, ch, n_deconv, n_conv, out_ch):
        super().__init__()
        self.deconv_layers = _deconvs(in_ch, ch, n_deconv)
        self.conv_layers = _convs(ch, n_conv)
        self.dropout = nn.Dropout2d(0.1)
        self.conv_seg = nn.Conv2d(ch, out_ch, 1)

    def forward(self, x):
        return self.conv_seg(self.dropout(self.conv_layers(self.deconv_layers(x))))


def make_head(task: str, in_ch: int, ch: int, num_keypoints: int = 17, patch: int = 16) -> nn.Module:
    """The Sapiens head of ``task``: pose (2 deconvs, 2 convs), depth (4, 2) or normal (3, 3) at
    patch 16; one deconv fewer at patch 8 (mmpose / mmseg heads take the deconv count)."""
    fewer = {16: 0, 8: 1}[patch]
    if task == "pose":
        return HeatmapHead(in_ch, ch, num_keypoints, 2 - fewer)
    if task == "depth":
        return DecodeHead(in_ch, ch, 4 - fewer, 2, 1)
    if task == "normal":
        return DecodeHead(in_ch, ch, 3 - fewer, 3, 3)
    raise ValueError(f"unknown task {task!r}")


def disable_dropout_(model: nn.Module) -> nn.Module:
    """Set every Dropout2d to p = 0 (train-mode comparisons against a dropout-free forward)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout2d):
            module.p = 0.0
    return model


class SapiensTorch(nn.Module):
    """``task``: 'pose' (``head``), 'depth' / 'normal' (``decode_head``) or 'backbone'."""

    def __init__(self, arch, task, image_size, patch_padding=None, num_keypoints=17):
        super().__init__()
        dim, _, _, pose_ch, depth_ch, normal_ch = ARCHS[arch][:6]
        if patch_padding is None:
            patch_padding = 0 if task == "depth" else 2
        self.task = task
        self.backbone = ViT(arch, image_size, patch_padding)
        width = {"pose": pose_ch, "depth": depth_ch, "normal": normal_ch}
        if task in width:  # Sapiens' keys: head.* for pose, decode_head.* for depth / normal
            head = make_head(task, dim, width[task], num_keypoints, patch_size(arch))
            setattr(self, "head" if task == "pose" else "decode_head", head)

    def forward(self, x):
        feats = self.backbone(x)
        if self.task == "pose":
            return feats, self.head(feats)
        if self.task in ("depth", "normal"):
            return feats, self.decode_head(feats)
        return feats, None


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial random weights: every tensor drawn fresh (norm scales around 1, biases non-zero),
    scaled by fan-in so activations stay O(1) through deep stacks."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.ndim == 1:
            base = 1.0 if ("ln" in name and name.endswith("weight")) else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
        elif name.endswith("pos_embed"):
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        else:
            fan_in = (
                p.shape[0] * p.shape[2] * p.shape[3]
                if isinstance(dict(model.named_modules()).get(name.rsplit(".", 1)[0]), nn.ConvTranspose2d)
                else p[0].numel()
            )
            p.copy_(torch.randn(p.shape, generator=g) * fan_in**-0.5)
    return model.eval()


def make_reference(arch, task, image_size, seed=0, **kw) -> SapiensTorch:
    """A random, eval-mode reference model."""
    return randomize_(SapiensTorch(arch, task, image_size, **kw), seed)


def run(model: SapiensTorch, images_nhwc) -> tuple:
    """Run on NHWC numpy images; returns (features NHWC, head output NHWC or None) as numpy."""
    x = torch.from_numpy(images_nhwc).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        feats, out = model(x)
    to_np = lambda t: None if t is None else t.permute(0, 2, 3, 1).numpy()
    return to_np(feats), to_np(out)


def resize_pretrain_pos_embed(pos_embed: torch.Tensor, grid) -> torch.Tensor:
    """mmpretrain ``resize_pos_embed`` as Sapiens applies it: drop cls, bicubic-resize 64x64 -> grid."""
    _, n, d = pos_embed.shape
    s = int((n - 1) ** 0.5)
    src = pos_embed[:, 1:].reshape(1, s, s, d).permute(0, 3, 1, 2)
    dst = F.interpolate(src.float(), size=grid, mode="bicubic", align_corners=False)
    return dst.flatten(2).transpose(1, 2)
