"""The jitted train step, and the same model's PyTorch step side by side.

JAX: the project's own step (``training.trainer.compile_phase``: the configured objective over the
chosen heads, the Sapiens AdamW, EMA), AOT-compiled once, then timed over --steps steps after
--warmup. PyTorch (``--framework torch|both``): the independent reference of the tests
(``tests/helpers/torch_sapiens.py``, plain ``torch.nn``) holding the *same* weights (exported through
``convert_weights``), on the same batch, with a loss of the same form (weighted heatmap MSE, SI-log
depth, L1 + (1 - cos) normals), ``torch.optim.AdamW``, the same frozen prefix; attention through
``F.scaled_dot_product_attention`` (``--torch-attention math`` keeps the reference's explicit
softmax), bf16 autocast when ``--dtype bfloat16``, ``torch.compile`` with ``--torch-compile``.
With ``both``, the timed steps alternate (jax, torch, jax, torch, ...) so that load from other
processes hits both alike; ``torch_over_jax`` is the ratio of the medians.

Reported per framework: ``compile_s`` (JAX: lower + compile; torch: the first step), ``step_s``
(median), ``img_per_s``, ``tflop_per_img`` (analytic: 3 x the forward matmuls and convolutions of
``training.flops.analytic_forward_flops``), ``xla_tflop_per_img`` (JAX: XLA's count of the
compiled step, which credits frozen blocks their skipped weight gradients), ``mfu`` (analytic
FLOPs against the device peak: detected, or --peak-tflops; null on CPU) and ``peak_bytes`` (GPU:
the allocator's peak; CPU: the compiled executable's arguments + temporaries + outputs for JAX,
null for torch).

  python benchmarks/train_step.py --arch sapiens_0.3b --image-size 128,96 --heads pose,depth,normal \\
      --batch 2 --framework both --steps 5 --out /tmp/step.json

Options cover the knobs of the config (dtype, remat and its policy, scanned blocks, attention
implementation, trainable blocks, a frozen ``pos_embed``). The markdown row printed at the end is
the one docs/performance.md collects.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx

from hyper_sapiens_jax.config import base_config
from hyper_sapiens_jax.data.codec import encode_udp_heatmaps
from hyper_sapiens_jax.data.transforms import normalize_image
from hyper_sapiens_jax.models.arch import HEADS, ModelConfig
from hyper_sapiens_jax.models.sapiens import Sapiens
from hyper_sapiens_jax.models.weights import abstract_model, flat_params, params_state
from hyper_sapiens_jax.sharding import global_batch, make_mesh
from hyper_sapiens_jax.training import flops
from hyper_sapiens_jax.training.adapters import model_config
from hyper_sapiens_jax.training.trainer import compile_phase, fresh_state, make_objective

REPO = Path(__file__).resolve().parents[1]


def parse_hw(text: str) -> tuple[int, int]:
    """'1024,768' -> (1024, 768) = (H, W)."""
    try:
        h, w = (int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size {text!r}: expected H,W (e.g. 1024,768)") from None
    return h, w


def parse_heads(text: str) -> tuple[str, ...]:
    heads = tuple(h for h in text.split(",") if h)
    if not heads or set(heads) - set(HEADS):
        raise argparse.ArgumentTypeError(f"--heads {text!r}: expected a comma list of {', '.join(HEADS)}")
    return heads


# =============================================================================================
# The batch both frameworks train on
# =============================================================================================
def batch_shapes(mcfg: ModelConfig, batch: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """(shape, dtype) of each key of the lean train batch the step reads (``training.batch``)."""
    h, w = mcfg.image_size
    k = mcfg.num_keypoints
    return {
        "image": ((batch, h, w, 3), "uint8"),
        "keypoints": ((batch, k, 2), "float32"),
        "target_weight": ((batch, k), "float32"),
        "depth": ((batch, h, w, 1), "float32"),
        "normal": ((batch, h // 2, w // 2, 3), "float32"),
        **{name: ((batch,), "float32") for name in ("has_pose", "has_depth", "has_normal", "is_real", "valid")},
        "intrinsics": ((batch, 3, 3), "float32"),
    }


def synthetic_batch(mcfg: ModelConfig, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A lean batch of ``batch_shapes``: random uint8 crops, keypoints inside the crop, relative
    depth in [0, 1] over a person box (-1 elsewhere), unit normals, every target present."""
    rng = np.random.default_rng(seed)
    shapes = batch_shapes(mcfg, batch)
    h, w = mcfg.image_size
    depth = np.full(shapes["depth"][0], -1.0, np.float32)
    depth[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = rng.uniform(0.05, 1.0, (batch, h // 2, w // 2, 1))
    normal = rng.normal(size=shapes["normal"][0]).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    focal = float(max(h, w))
    intrinsics = np.tile(np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]], np.float32), (batch, 1, 1))
    ones = np.ones((batch,), np.float32)
    out = {
        "image": rng.integers(0, 256, size=shapes["image"][0], dtype=np.uint8),
        "keypoints": rng.uniform([0, 0], [w - 1, h - 1], size=shapes["keypoints"][0]).astype(np.float32),
        "target_weight": np.ones(shapes["target_weight"][0], np.float32),
        "depth": depth,
        "normal": normal,
        **{name: ones for name in ("has_pose", "has_depth", "has_normal", "is_real", "valid")},
        "intrinsics": intrinsics,
    }
    assert {k: (v.shape, str(v.dtype)) for k, v in out.items()} == shapes
    return out


def host_targets(mcfg: ModelConfig, batch: dict[str, np.ndarray], sigma: float) -> dict[str, np.ndarray]:
    """What the torch step reads: the normalised image and the host codec's heatmaps."""
    h, w = mcfg.image_size
    heatmaps = [
        encode_udp_heatmaps(kp, wt, input_wh=(w, h), heatmap_wh=(w // 4, h // 4), sigma=sigma)[0]
        for kp, wt in zip(batch["keypoints"], batch["target_weight"])
    ]
    return {**batch, "image": normalize_image(batch["image"]), "heatmaps": np.stack(heatmaps)}


# =============================================================================================
# JAX
# =============================================================================================
def bench_config(args: argparse.Namespace):
    """The experiment config of the benchmarked step (the defaults of ``base_config(arch)``)."""
    config = base_config(args.arch)
    m = config.model
    m.image_size, m.heads, m.dtype = tuple(args.image_size), tuple(args.heads), args.dtype
    m.remat, m.remat_policy, m.scan_blocks, m.attention = args.remat, args.remat_policy, args.scan, args.attention
    m.remat_heads = args.remat_heads
    m.head_dropout = 0.0  # the reference has no dropout in train mode here; keep the two alike
    config.batch_size, config.micro_batches = args.batch, 1
    config.train_pos_embed = not args.freeze_pos_embed
    config.loss.sds = 0.0  # no prior: the step of supervised fine-tuning
    return config


class JaxStep:
    """The project's jitted train step, AOT-compiled for one batch shape."""

    def __init__(self, args: argparse.Namespace, flat: dict[tuple, np.ndarray], batch: dict[str, np.ndarray]):
        config = bench_config(args)
        self.mcfg = model_config(config)
        mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
        graphdef = nnx.graphdef(abstract_model(self.mcfg))
        phase = compile_phase(
            config, self.mcfg, mesh, graphdef, args.trainable_blocks, make_objective(config, None, None)
        )
        self.state = fresh_state(phase, params_state(self.mcfg, flat))
        self.batch = global_batch(batch, mesh)
        self.key = jax.random.key(0)
        t0 = time.perf_counter()
        self.compiled = phase.step.lower(self.state, self.batch, self.key).compile()
        self.compile_s = time.perf_counter() - t0
        cost = self.compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        self.xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
        self.loss = self.initial_loss = None

    def __call__(self) -> float:
        t0 = time.perf_counter()
        self.state, metrics = self.compiled(self.state, self.batch, self.key)
        self.loss = float(jax.block_until_ready(metrics["loss"]))
        self.initial_loss = self.loss if self.initial_loss is None else self.initial_loss
        return time.perf_counter() - t0

    def peak_bytes(self) -> int | None:
        device = jax.devices()[0]
        if device.platform == "gpu":
            stats = device.memory_stats() or {}
            return stats.get("peak_bytes_in_use")
        mem = self.compiled.memory_analysis()
        if mem is None:
            return None
        return int(
            mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
        )


# =============================================================================================
# PyTorch
# =============================================================================================
class TorchStep:
    """The independent reference with the JAX model's weights, trained by AdamW on the same batch."""

    def __init__(self, args: argparse.Namespace, mcfg: ModelConfig, flat: dict, batch: dict[str, np.ndarray]):
        import torch
        import torch.nn.functional as F
        from torch import nn

        sys.path.insert(0, str(REPO))  # the test helpers are a package of the repository, not installed
        from convert_weights.flax_to_torch import export_state_dict
        from convert_weights.layout import TASK_PREFIX
        from tests.helpers import torch_sapiens as ts

        self.torch, self.F = torch, F
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        spec = mcfg.spec
        widths = {"pose": spec.pose_channels, "depth": spec.depth_channels, "normal": spec.normal_channels}

        class Model(nn.Module):
            def __init__(self):
                super().__init__()
                self.backbone = ts.ViT(mcfg.arch, mcfg.image_size, mcfg.patch_padding)
                self.heads = nn.ModuleDict(
                    {h: ts.make_head(h, spec.embed_dims, widths[h], mcfg.num_keypoints) for h in mcfg.heads}
                )

            def forward(self, x):
                feats = self.backbone(x)
                return {h: head(feats) for h, head in self.heads.items()}

        model = Model()
        for task in mcfg.heads:  # every export carries the backbone; the heads take their own keys
            sd, _ = export_state_dict(mcfg, flat, task)
            tensors = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in sd.items()}
            model.backbone.load_state_dict(
                {k[len("backbone.") :]: v for k, v in tensors.items() if k.startswith("backbone.")}
            )
            prefix = TASK_PREFIX[task]
            model.heads[task].load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        ts.disable_dropout_(model)  # as the JAX side (head_dropout 0): no dropout, same loss
        if args.torch_attention == "sdpa":
            for block in model.backbone.layers:
                block.attn.forward = _sdpa_forward(block.attn, F)
        num_layers, blocks = spec.num_layers, args.trainable_blocks
        if blocks is not None and blocks < num_layers:
            frozen = [model.backbone.patch_embed, *model.backbone.layers[: num_layers - blocks]]
            for module in frozen:
                module.requires_grad_(False)
            model.backbone.pos_embed.requires_grad_(not args.freeze_pos_embed)
        elif args.freeze_pos_embed:
            raise SystemExit("--freeze-pos-embed needs --trainable-blocks below the number of layers")
        self.model = model.to(self.device).train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        fused = self.device.type == "cuda"
        self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=fused)
        self.params = params
        to = lambda v: torch.from_numpy(v).to(self.device)
        self.batch = {k: to(v) for k, v in host_targets(mcfg, batch, bench_config(args).data.heatmap_sigma).items()}
        self.batch["image"] = self.batch["image"].permute(0, 3, 1, 2).contiguous()
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if args.dtype == "bfloat16"
            else contextlib.nullcontext()
        )
        self.step_fn = torch.compile(self._step) if args.torch_compile else self._step
        self.loss = self.initial_loss = None
        t0 = time.perf_counter()
        self()
        self.compile_s = time.perf_counter() - t0

    def _loss(self, outputs: dict) -> Any:
        F, torch, b = self.F, self.torch, self.batch
        total = 0.0
        nhwc = {k: v.float().permute(0, 2, 3, 1) for k, v in outputs.items()}
        if "pose" in nhwc:
            sq = (nhwc["pose"] - b["heatmaps"]) ** 2 * b["target_weight"][:, None, None, :]
            total = total + sq.mean()
        if "depth" in nhwc:
            gt = b["depth"][..., 0]
            valid = (gt > 1e-6).float()
            n = valid.sum((1, 2)).clamp(min=1.0)
            d = (torch.log(gt.clamp(min=1e-6)) - torch.log(nhwc["depth"][..., 0].clamp(min=1e-3))) * valid
            mean_d, mean_d2 = d.sum((1, 2)) / n, (d**2).sum((1, 2)) / n
            total = total + torch.sqrt((mean_d2 - 0.5 * mean_d**2).clamp(min=0.0) + 1e-12).mean()
        if "normal" in nhwc:
            pred, gt = nhwc["normal"], b["normal"]
            l1 = (pred - gt).abs().mean(-1)
            cos = F.cosine_similarity(pred, gt, dim=-1, eps=1e-6)
            total = total + (l1 + 1.0 - cos).mean()
        return total

    def _step(self):
        with self.autocast:
            outputs = self.model(self.batch["image"])
        loss = self._loss(outputs)
        loss.backward()
        self.torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss

    def __call__(self) -> float:
        t0 = time.perf_counter()
        loss = self.step_fn()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()
        self.loss = float(loss.detach())
        self.initial_loss = self.loss if self.initial_loss is None else self.initial_loss
        return time.perf_counter() - t0

    def peak_bytes(self) -> int | None:
        if self.device.type == "cuda":
            return int(self.torch.cuda.max_memory_allocated())
        return None


def _sdpa_forward(attn, F):
    """The reference's Attention.forward through F.scaled_dot_product_attention."""

    def forward(x):
        b, t, d = x.shape
        q, k, v = attn.qkv(x).reshape(b, t, 3, attn.num_heads, d // attn.num_heads).permute(2, 0, 3, 1, 4)
        return attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))

    return forward


# =============================================================================================
# Timing and report
# =============================================================================================
def summarize(name: str, times: list[float], runner, batch: int, analytic: float, peak: float | None) -> dict:
    step_s = statistics.median(times)
    out = {
        "framework": name,
        "compile_s": round(runner.compile_s, 3),
        "step_s": step_s,
        "step_s_all": times,
        "img_per_s": batch / step_s,
        "tflop_per_img": analytic / 1e12,
        "mfu": None if peak is None else analytic * batch / step_s / (peak * jax.device_count()),
        "peak_bytes": runner.peak_bytes(),
        "initial_loss": runner.initial_loss,  # at the shared initial weights: the two must agree
        "final_loss": runner.loss,
    }
    if hasattr(runner, "xla_flops"):
        out["xla_tflop_per_img"] = runner.xla_flops / batch / 1e12
    return out


def markdown_row(result: dict) -> str:
    a = result["args"]
    cells = [
        a["arch"],
        "x".join(map(str, a["image_size"])),
        ",".join(a["heads"]),
        str(a["batch"]),
        a["dtype"],
        "all" if a["trainable_blocks"] is None else str(a["trainable_blocks"]),
    ]
    for name in ("jax", "torch"):
        r = result.get(name)
        cells.append("-" if r is None else f"{r['step_s']:.3f} s")
    ratio = result.get("torch_over_jax")
    cells.append("-" if ratio is None else f"{ratio:.2f}x")
    jax_r = result.get("jax") or {}
    cells.append("-" if jax_r.get("mfu") is None else f"{100 * jax_r['mfu']:.1f}%")
    peak = jax_r.get("peak_bytes")
    cells.append("-" if peak is None else f"{peak / 2**30:.2f} GiB")
    return "| " + " | ".join(cells) + " |"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="sapiens_0.3b", help="model preset (tiny, cpu, sapiens_0.3b ... sapiens_2b)")
    p.add_argument("--image-size", type=parse_hw, default=(1024, 768), help="input H,W (multiples of 16)")
    p.add_argument("--heads", type=parse_heads, default=("pose",), help="comma list of pose,depth,normal")
    p.add_argument("--batch", type=int, default=2, help="global batch")
    p.add_argument("--framework", choices=("jax", "torch", "both"), default="jax")
    p.add_argument("--steps", type=int, default=5, help="timed steps per framework (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after compiling")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    p.add_argument("--remat", action="store_true", help="rematerialise each block in the backward")
    p.add_argument("--remat-policy", default="nothing_saveable", help="a jax.checkpoint_policies name")
    p.add_argument("--remat-heads", action="store_true", help="rematerialise each head layer in the backward")
    p.add_argument("--scan", action="store_true", help="run the blocks under lax.scan")
    p.add_argument("--attention", choices=("xla", "cudnn"), default="xla", help="JAX attention implementation")
    p.add_argument("--trainable-blocks", type=int, default=None, help="train only the last N blocks (+ heads)")
    p.add_argument("--freeze-pos-embed", action="store_true", help="freeze pos_embed with the frozen prefix")
    p.add_argument("--torch-attention", choices=("sdpa", "math"), default="sdpa")
    p.add_argument("--torch-compile", action="store_true", help="torch.compile the PyTorch step")
    p.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (default: detected)")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        p.error("--steps and --batch must be positive")
    if any(s % 16 for s in args.image_size):
        p.error(f"--image-size {args.image_size}: both sides must be multiples of 16")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    mcfg = model_config(bench_config(args))
    batch = synthetic_batch(mcfg, args.batch)
    flat = flat_params(Sapiens(mcfg, rngs=nnx.Rngs(0)))
    analytic = flops.train_flops_per_image_analytic(mcfg)
    peak = flops.peak_flops_per_device(args.peak_tflops)
    runners: dict[str, Any] = {}
    if args.framework in ("jax", "both"):
        runners["jax"] = JaxStep(args, flat, batch)
    if args.framework in ("torch", "both"):
        import torch

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        runners["torch"] = TorchStep(args, mcfg, flat, batch)
    for runner in runners.values():
        for _ in range(args.warmup):
            runner()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.steps):  # interleaved: jax, torch, jax, torch, ...
        for name, runner in runners.items():
            times[name].append(runner())
    result: dict[str, Any] = {
        "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()},
        "device": jax.devices()[0].device_kind,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    for name, runner in runners.items():
        result[name] = summarize(name, times[name], runner, args.batch, analytic, peak)
    if len(runners) == 2:
        result["torch_over_jax"] = result["torch"]["step_s"] / result["jax"]["step_s"]
    for name in runners:
        r = result[name]
        xla = f", XLA {r['xla_tflop_per_img']:.4f}" if "xla_tflop_per_img" in r else ""
        util = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        print(
            f"{name}: compile {r['compile_s']:.1f} s, step {r['step_s']:.4f} s (median of {args.steps}), "
            f"{r['img_per_s']:.2f} img/s, {r['tflop_per_img']:.4f} TFLOP/img (analytic{xla}), "
            f"MFU {util}, "
            f"peak {r['peak_bytes']} B, loss {r['final_loss']:.4f}"
        )
    if "torch_over_jax" in result:
        print(f"torch / jax step time: {result['torch_over_jax']:.2f}x")
    print("| arch | image | heads | batch | dtype | trainable | jax step | torch step | torch/jax | MFU | JAX peak |")
    print(markdown_row(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
