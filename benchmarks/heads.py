"""CPU cost of the heads' stride-2 deconvolutions: nnx.ConvTranspose versus Deconv4x2 (both methods).

Times the jitted forward + backward (``jax.value_and_grad`` of a random linear functional of the
output, gradients w.r.t. the kernel / every head param and the input) of

  deconv cases   one torch ConvTranspose2d(k=4, s=2, p=1) layer of a small model, batch --batch:
                 D=192 -> 64 at 8x6, then 64 -> 64 at 16x12, 32x24 and 64x48 (the depth head's
                 4th deconv reaches the full 128x96)
  head cases     the full pose / depth / normal heads of a model with embed --embed (192) and head
                 widths --pose-ch / --depth-ch / --normal-ch (64 / 32 / 64) on an 8x6 feature map

each as (a) ``old``: nnx.ConvTranspose(..., transpose_kernel=True), the implementation before
Deconv4x2, (b) ``3x3``: Deconv4x2(method='subpixel3x3'), one 3x3 conv + depth-to-space, and
(c) ``new``: Deconv4x2 as the heads use it (method='phases', four 2x2 convs + interleave), all with
identical kernels, and

  1x1 cases      one 1x1 convolution --conv-ch -> --conv-ch at each --conv-hw: ``old`` nnx.Conv
                 against ``new`` Conv1x1 (the same params as a matmul), as the heads' conv layers

PyTorch is timed as the reference (``torch.set_num_threads(--torch-threads)``) unless --no-torch:
conv_transpose2d / conv2d for the single layers, the heads of tests/helpers/torch_sapiens.py holding the
same weights for the head cases. --skip-old leaves out the slow ``old`` variants.

Repetitions are interleaved (old, 3x3, new, torch, old, 3x3, new, torch, ...) so that load from
other processes hits every variant alike; the table reports medians and the old / new, 3x3 / new and
new / torch ratios.

  python benchmarks/heads.py [--reps 5] [--batch 32] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hyper_sapiens_jax.models.heads import Conv1x1, Deconv4x2, DepthHead, NormalHead, PoseHead


def old_deconv(c_in: int, c_out: int, rngs: nnx.Rngs) -> nnx.ConvTranspose:
    """The pre-Deconv4x2 layer: torch ConvTranspose2d(k=4, s=2, p=1) as flax's conv_transpose."""
    return nnx.ConvTranspose(
        c_in, c_out, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), use_bias=False, transpose_kernel=True, rngs=rngs
    )


def with_method(head, method: str):
    """A copy of ``head`` whose Deconv4x2 layers run ``method`` (same kernels)."""
    head = nnx.clone(head)
    for layer in head.deconv_layers:
        layer.method = method
    return head


def with_old_deconvs(head):
    """A copy of ``head`` whose deconv_layers are nnx.ConvTranspose holding the same kernels."""
    head = nnx.clone(head)
    layers = []
    for layer in head.deconv_layers:
        old = old_deconv(layer.in_features, layer.out_features, nnx.Rngs(0))
        old.kernel[...] = layer.kernel[...]
        layers.append(old)
    head.deconv_layers = nnx.List(layers)
    return head


def fwd_bwd(module, x: jax.Array, seed: int):
    """(jitted fn, args): value_and_grad of <module(x), probe> w.r.t. (params, x); random probe."""
    graphdef, params = nnx.split(module)
    out_shape = jax.eval_shape(lambda p, v: nnx.merge(graphdef, p)(v), params, x).shape
    probe = jax.random.normal(jax.random.key(seed), out_shape)

    def loss(p, v, probe):  # probe is an argument, not a constant XLA would fold at compile time
        return jnp.sum(nnx.merge(graphdef, p)(v) * probe)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), (params, x, probe)


def torch_fwd_bwd(x: np.ndarray, kernel: np.ndarray, seed: int):
    """(fn, args) timing torch conv_transpose2d forward + backward, NCHW, torch-layout kernel."""
    import torch

    from convert_weights.layout import to_torch

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_(True)
    wt = torch.from_numpy(to_torch("conv", kernel)).requires_grad_(True)
    with torch.no_grad():
        shape = torch.nn.functional.conv_transpose2d(xt, wt, stride=2, padding=1).shape
    probe = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))

    def fn():
        xt.grad = wt.grad = None
        y = torch.nn.functional.conv_transpose2d(xt, wt, stride=2, padding=1)
        (y * probe).sum().backward()
        return xt.grad, wt.grad

    return fn


def torch_conv1x1_fwd_bwd(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, seed: int):
    """(fn) timing torch conv2d (1x1) forward + backward, NCHW."""
    import torch

    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_(True)
    wt = torch.from_numpy(np.ascontiguousarray(kernel[0, 0].T[:, :, None, None])).requires_grad_(True)
    bt = torch.from_numpy(np.array(bias)).requires_grad_(True)
    shape = (x.shape[0], kernel.shape[-1], *x.shape[1:3])
    probe = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))

    def fn():
        xt.grad = wt.grad = bt.grad = None
        (torch.nn.functional.conv2d(xt, wt, bt) * probe).sum().backward()
        return xt.grad, wt.grad

    return fn


def torch_head_fwd_bwd(task: str, head, x: np.ndarray, seed: int):
    """(fn) timing the torch reference head of ``task`` (tests/helpers/torch_sapiens.py), holding ``head``'s
    weights (through the converter's key rules), forward + backward, NCHW, no dropout."""
    import sys
    from pathlib import Path

    import torch

    from convert_weights.layout import TASK_PREFIX, flax_to_torch_state_dict, head_rules

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers: a repository package
    from tests.helpers import torch_sapiens as ts

    width = head.deconv_layers[0].out_features
    embed = head.deconv_layers[0].in_features
    num_keypoints = head.final_layer.out_features if task == "pose" else 0  # only the pose head has K
    ref = ts.disable_dropout_(ts.make_head(task, embed, width, num_keypoints))
    flat = {("heads", task, *p): v.get_value() for p, v in nnx.to_flat_state(nnx.state(head))}
    prefix = TASK_PREFIX[task]
    sd = flax_to_torch_state_dict(flat, head_rules(task))
    ref.load_state_dict({k[len(prefix) :]: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).requires_grad_(True)
    with torch.no_grad():
        shape = ref(xt).shape
    probe = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))

    def fn():
        xt.grad = None
        ref.zero_grad(set_to_none=True)
        (ref(xt) * probe).sum().backward()
        return xt.grad

    return fn


def jax_timer(fn, args):
    return lambda: jax.block_until_ready(fn(*args))


def build_cases(a) -> list[dict]:
    """Every case: name, shape description and its timers {variant: zero-arg callable}."""
    b, (h, w) = a.batch, a.feature_hw
    cases = []
    deconvs = [(a.embed, a.deconv_ch, h, w)] + [(a.deconv_ch, a.deconv_ch, h * 2**i, w * 2**i) for i in (1, 2, 3)]
    for i, (c_in, c_out, hi, wi) in enumerate(deconvs):
        kx, kk = jax.random.split(jax.random.key(i))
        x = jax.random.normal(kx, (b, hi, wi, c_in))
        new = Deconv4x2(c_in, c_out, rngs=nnx.Rngs(i))
        sub3 = Deconv4x2(c_in, c_out, method="subpixel3x3", rngs=nnx.Rngs(i))
        old = old_deconv(c_in, c_out, nnx.Rngs(i))
        kernel = jax.random.normal(kk, new.kernel.shape) * 0.05
        for m in (new, sub3, old):
            m.kernel[...] = kernel
        timers = {
            "old": jax_timer(*fwd_bwd(old, x, i)),
            "3x3": jax_timer(*fwd_bwd(sub3, x, i)),
            "new": jax_timer(*fwd_bwd(new, x, i)),
        }
        if a.skip_old:
            del timers["old"]
        if not a.no_torch:
            timers["torch"] = torch_fwd_bwd(np.asarray(x), np.asarray(kernel), i)
        cases.append(
            {
                "name": f"deconv {c_in}->{c_out} {hi}x{wi}->{2 * hi}x{2 * wi}",
                "input": [b, hi, wi, c_in],
                "timers": timers,
            }
        )
    for i, (hi, wi) in enumerate(a.conv_hw):
        x = jax.random.normal(jax.random.key(100 + i), (b, hi, wi, a.conv_ch))
        new = Conv1x1(a.conv_ch, a.conv_ch, rngs=nnx.Rngs(i))
        new.bias[...] = jax.random.normal(jax.random.key(200 + i), new.bias.shape)
        old = nnx.Conv(a.conv_ch, a.conv_ch, (1, 1), rngs=nnx.Rngs(i))
        old.kernel[...], old.bias[...] = new.kernel[...], new.bias[...]
        timers = {"old": jax_timer(*fwd_bwd(old, x, 100 + i)), "new": jax_timer(*fwd_bwd(new, x, 100 + i))}
        if not a.no_torch:
            timers["torch"] = torch_conv1x1_fwd_bwd(np.asarray(x), np.asarray(new.kernel[...]), new.bias[...], 100 + i)
        name = f"1x1 conv {a.conv_ch}->{a.conv_ch} {hi}x{wi}"
        cases.append({"name": name, "input": [b, hi, wi, a.conv_ch], "timers": timers})
    if a.skip_heads:
        return cases
    heads = {
        "pose head": PoseHead(a.embed, a.num_keypoints, a.pose_ch, rngs=nnx.Rngs(10)),
        "depth head": DepthHead(a.embed, a.depth_ch, rngs=nnx.Rngs(11)),
        "normal head": NormalHead(a.embed, a.normal_ch, rngs=nnx.Rngs(12)),
    }
    x = jax.random.normal(jax.random.key(20), (b, h, w, a.embed))
    for j, (name, head) in enumerate(heads.items()):
        n_deconv = len(head.deconv_layers)
        width = head.deconv_layers[0].out_features
        timers = {
            "old": jax_timer(*fwd_bwd(with_old_deconvs(head), x, 30 + j)),
            "3x3": jax_timer(*fwd_bwd(with_method(head, "subpixel3x3"), x, 30 + j)),
            "new": jax_timer(*fwd_bwd(head, x, 30 + j)),
        }
        if a.skip_old:
            del timers["old"]
        if not a.no_torch:
            timers["torch"] = torch_head_fwd_bwd(name.split()[0], head, np.asarray(x), 30 + j)
        cases.append(
            {
                "name": f"{name} {a.embed}->{width} {h}x{w}->{h * 2**n_deconv}x{w * 2**n_deconv}",
                "input": [b, h, w, a.embed],
                "timers": timers,
            }
        )
    return cases


def run(a) -> dict:
    if not a.no_torch:
        import torch

        torch.set_num_threads(a.torch_threads)
    cases = build_cases(a)
    results = []
    for case in cases:
        timers = case.pop("timers")
        first = {}
        for variant, fn in timers.items():  # compile + first call, then warmup
            t0 = time.perf_counter()
            fn()
            first[variant] = time.perf_counter() - t0
            for _ in range(a.warmup - 1):
                fn()
        times = {v: [] for v in timers}
        for _ in range(a.reps):  # interleaved repetitions
            for variant, fn in timers.items():
                t0 = time.perf_counter()
                fn()
                times[variant].append(time.perf_counter() - t0)
        med = {v: statistics.median(t) for v, t in times.items()}
        row = {
            **case,
            "median_s": med,
            "times_s": times,
            "first_call_s": first,
            "old_over_new": med["old"] / med["new"] if "old" in med else None,
            "sub3x3_over_new": med["3x3"] / med["new"] if "3x3" in med else None,
        }
        if "torch" in med:
            row["new_over_torch"] = med["new"] / med["torch"]
        results.append(row)
        print_row(row, header=len(results) == 1, torch_col=not a.no_torch)
    return {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
        },
        "args": vars(a),
        "results": results,
    }


def print_row(r: dict, header: bool, torch_col: bool) -> None:
    if header:
        cols = ["case", "old ms", "3x3 ms", "new ms", "old/new", "3x3/new"] + (
            ["torch ms", "new/torch"] if torch_col else []
        )
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join(["---"] + ["---:"] * (len(cols) - 1)) + "|")
    m = r["median_s"]
    cells = [
        r["name"],
        f"{1e3 * m['old']:.1f}" if "old" in m else "",
        f"{1e3 * m['3x3']:.1f}" if "3x3" in m else "",
        f"{1e3 * m['new']:.1f}",
        f"{r['old_over_new']:.1f}x" if r["old_over_new"] is not None else "",
        f"{r['sub3x3_over_new']:.2f}x" if r["sub3x3_over_new"] is not None else "",
    ]
    if torch_col:
        cells += [f"{1e3 * m['torch']:.1f}", f"{r['new_over_torch']:.2f}x"] if "torch" in m else ["", ""]
    print("| " + " | ".join(cells) + " |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per variant (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per variant, incl. compile (1)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument(
        "--feature-hw",
        type=int,
        nargs=2,
        default=(8, 6),
        metavar=("H", "W"),
        help="backbone feature map (default 8 6, i.e. 128x96 images at patch 16)",
    )
    p.add_argument("--embed", type=int, default=192, help="backbone width D (default 192)")
    p.add_argument("--deconv-ch", type=int, default=64, help="width of the single-deconv cases (64)")
    p.add_argument("--pose-ch", type=int, default=64, help="pose head width (default 64)")
    p.add_argument("--depth-ch", type=int, default=32, help="depth head width (default 32)")
    p.add_argument("--normal-ch", type=int, default=64, help="normal head width (default 64)")
    p.add_argument("--num-keypoints", type=int, default=17, help="pose heatmaps (default 17)")
    p.add_argument("--conv-ch", type=int, default=64, help="width of the 1x1 conv cases (64)")
    p.add_argument(
        "--conv-hw",
        type=int,
        nargs="+",
        default=(32, 24, 64, 48),
        help="H W pairs of the 1x1 conv cases (default 32 24 64 48)",
    )
    p.add_argument("--skip-heads", action="store_true", help="only the single-layer cases")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--skip-old", action="store_true", help="skip the nnx.ConvTranspose / nnx.Conv variants (slow)")
    p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--out", help="write the results as JSON here")
    a = p.parse_args(argv)
    a.feature_hw = tuple(a.feature_hw)
    if len(a.conv_hw) % 2:
        p.error("--conv-hw takes H W pairs")
    a.conv_hw = [tuple(a.conv_hw[i : i + 2]) for i in range(0, len(a.conv_hw), 2)]
    res = run(a)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
