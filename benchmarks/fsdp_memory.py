"""Per-device memory of the FSDP train step, AOT-compiled with no weights materialised.

The project's own step (``training.trainer.compile_phase``: objective over the chosen heads, Sapiens
AdamW, EMA, parameters sharded over the mesh's ``fsdp`` axis) is lowered on abstract inputs
(``jax.ShapeDtypeStruct`` with their shardings) and compiled for ``--devices`` devices; nothing is
allocated. Reported per device, from the compiled executable's memory analysis: arguments (the
train state shard + the batch shard), outputs, temporaries, aliased (donated) bytes and
``per_device_bytes`` = arguments + outputs + temporaries - aliased, the peak the step needs. On CPU
the devices are fake (``--xla_force_host_platform_device_count``, set here before jax loads), so
run this for the numbers of a GPU/TPU pod's *layout*; the CPU backend's buffer assignment is close
to but not the same as a GPU's.

  python benchmarks/fsdp_memory.py --arch sapiens_2b --devices 8 --per-device-batch 1,2,4 --remat \\
      --out /tmp/fsdp_2b.json

Each --per-device-batch value is compiled once (2B at 1024x768 with scanned blocks: about a minute
or two per value on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path


def parse_ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="sapiens_2b")
    p.add_argument("--devices", type=int, default=8, help="devices in the mesh (fake CPU devices when on CPU)")
    p.add_argument("--fsdp", type=int, default=None, help="fsdp axis size (default: all devices)")
    p.add_argument("--per-device-batch", type=parse_ints, default=[1], help="comma list, e.g. 1,2,4")
    p.add_argument("--image-size", default="1024,768", help="input H,W")
    p.add_argument("--heads", default="pose,depth,normal", help="comma list of pose,depth,normal")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    p.add_argument("--remat", action="store_true", help="rematerialise each block in the backward")
    p.add_argument("--remat-heads", action="store_true", help="rematerialise each head layer too")
    p.add_argument("--remat-policy", default="nothing_saveable")
    p.add_argument("--no-scan", action="store_true", help="unrolled blocks (default: lax.scan over the blocks)")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    args = p.parse_args(argv)
    fsdp = args.fsdp or args.devices
    if args.devices < 1 or args.devices % fsdp:
        p.error(f"--fsdp {fsdp} must divide --devices {args.devices}")
    args.fsdp = fsdp
    return args


def measure(args: argparse.Namespace, per_device_batch: int) -> dict:
    """Compile the step for one per-device batch; its memory analysis per device."""
    import jax
    from flax import nnx
    from train_step import batch_shapes, bench_config

    from hyper_sapiens_jax.models.weights import abstract_model
    from hyper_sapiens_jax.sharding import batch_sharding, make_mesh
    from hyper_sapiens_jax.training.adapters import model_config
    from hyper_sapiens_jax.training.trainer import compile_phase, make_objective

    step_args = argparse.Namespace(
        arch=args.arch,
        image_size=tuple(int(v) for v in args.image_size.split(",")),
        heads=tuple(args.heads.split(",")),
        dtype=args.dtype,
        remat=args.remat,
        remat_policy=args.remat_policy,
        remat_heads=args.remat_heads,
        scan=not args.no_scan,
        attention="xla",
        batch=per_device_batch * args.devices,
        freeze_pos_embed=False,
    )
    config = bench_config(step_args)
    config.mesh.fsdp, config.mesh.data = args.fsdp, args.devices // args.fsdp
    mcfg = model_config(config)
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp, jax.devices()[: args.devices])
    graphdef = nnx.graphdef(abstract_model(mcfg))
    phase = compile_phase(config, mcfg, mesh, graphdef, None, make_objective(config, None, None))
    state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), phase.abstract, phase.shardings
    )
    b_sh = batch_sharding(mesh)
    shapes = batch_shapes(mcfg, step_args.batch)
    batch = {k: jax.ShapeDtypeStruct(s, d, sharding=b_sh) for k, (s, d) in shapes.items()}
    key = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = phase.step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    parts = {
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "temp_bytes": int(mem.temp_size_in_bytes),
        "alias_bytes": int(mem.alias_size_in_bytes),
    }
    per_device = parts["argument_bytes"] + parts["output_bytes"] + parts["temp_bytes"] - parts["alias_bytes"]
    n_params = sum(int(a.size) for a in jax.tree.leaves(phase.abstract.params))
    return {
        "per_device_batch": per_device_batch,
        "global_batch": step_args.batch,
        "compile_s": round(compile_s, 1),
        "per_device_bytes": per_device,
        "per_device_gib": per_device / 2**30,
        **parts,
        "params": n_params,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "jax" not in sys.modules:  # fake CPU devices must be asked for before jax initialises
        flag = f"--xla_force_host_platform_device_count={args.devices}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    sys.path.insert(0, str(Path(__file__).parent))  # for ``train_step``
    import jax

    if jax.device_count() < args.devices:
        raise SystemExit(
            f"--devices {args.devices}: only {jax.device_count()} devices (jax was initialised before this "
            "script could ask for fake CPU devices; run it as its own process)"
        )
    rows = []
    for b in args.per_device_batch:
        row = measure(args, b)
        rows.append(row)
        print(
            f"{args.arch} {args.image_size} heads {args.heads} {args.dtype} remat={args.remat} "
            f"remat_heads={args.remat_heads} "
            f"devices={args.devices} (fsdp {args.fsdp}) batch/device {b}: {row['per_device_gib']:.2f} GiB per device "
            f"(args {row['argument_bytes'] / 2**30:.2f}, temps {row['temp_bytes'] / 2**30:.2f}; "
            f"compile {row['compile_s']} s)",
            flush=True,
        )
    result = {
        "args": vars(args),
        "device": jax.devices()[0].device_kind,
        "platform": platform.platform(),
        "rows": rows,
        "per_device_bytes": {str(r["per_device_batch"]): r["per_device_bytes"] for r in rows},
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
