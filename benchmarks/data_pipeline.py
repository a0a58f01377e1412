"""Per-worker throughput of the training sample pipeline on the synthetic testbed.

For each source (SyRIP-layout COCO sets, MINI-RGBD) and in ONE process (= one Grain worker), times:

  decode floor    read_image / read_gray of the record's files only (rgb; + depth, mask for MINI-RGBD)
  source read     source[i]: decode + record (MINI-RGBD: + depth in metres and normals)
  tfds read       (--tfds) the same record from the TFDS ArrayRecord build (TfdsRecordSource)
  sample HxW      source[i] + train_sample: augmentation, warps, target weights, depth/normal targets
  tfds sample HxW (--tfds) the same from the TFDS record (MINI-RGBD: normals stored at build time)

at each --sizes (default the Sapiens 1024x768 and the demo 256x192), after --warmup untimed samples,
over --samples records cycling through the source. OpenCV runs with --threads threads (default 1:
a Grain worker should not count on other cores). With --workers N it also times the full Grain
``train_iterator`` (mp_prefetch, N worker processes) on each source.

  python benchmarks/data_pipeline.py --samples 100 --out /tmp/data_pipeline.json

With --batch-bytes it also reports, per source and size, the bytes of one sample: on the host (every
key), sent to the device (``training.batch.step_inputs``: uint8 image, no heatmaps, float16 dense
targets only where the source has them; also with the dense targets whole) and in the
layout before the lean batch (every key travelled, the image as float32 and the 17 heatmaps drawn
on the host: the host sample + 3 bytes more per image value + the heatmaps' float32 bytes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hyper_sapiens_jax.data.sources import CocoKeypointSource, MiniRgbdSource, read_gray, read_image
from hyper_sapiens_jax.data.topdown import SampleConfig, train_sample
from hyper_sapiens_jax.testbed.writer import write_testbed

DEFAULT_TESTBED = Path.home() / ".cache" / "hyper_sapiens_jax" / "testbed"


def parse_size(text: str) -> tuple[int, int]:
    """'1024x768' -> (1024, 768) = (H, W)."""
    h, _, w = text.lower().partition("x")
    if not (h.isdigit() and w.isdigit()) or int(h) % 4 or int(w) % 4:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HxW, both multiples of 4")
    return int(h), int(w)


def sample_config(size: tuple[int, int]) -> SampleConfig:
    """The configs' sigma: 6 at Sapiens' 256x192 heatmaps, 2 at the demo's 64x48 (and below)."""
    return SampleConfig(input_size=size, heatmap_sigma=2.0 if size[0] <= 256 else 6.0)


def build_sources(paths, which: list[str]) -> dict[str, Any]:
    """Name -> file source, as ``data.catalog.build_source`` makes them."""
    makers = {
        "syrip_real": lambda: CocoKeypointSource(
            paths.train_real_json, paths.train_real_images, domain="real", name="syrip_real"
        ),
        "syrip_syn": lambda: CocoKeypointSource(
            paths.train_syn_json, paths.train_syn_images, domain="synthetic", name="syrip_syn"
        ),
        "mini_rgbd": lambda: MiniRgbdSource(paths.mini_rgbd, [s.name for s in paths.sequences]),
    }
    return {name: makers[name]() for name in which}


def decode_only(source) -> Callable[[int], Any]:
    """The files of record i decoded and nothing else: the floor any reader pays."""
    if isinstance(source, MiniRgbdSource):

        def fn(i):
            rec = source.records[i]
            return read_image(rec["rgb"]), read_gray(rec["depth"], np.float32), read_gray(rec["mask"])

        return fn
    return lambda i: read_image(source.records[i]["path"])


def time_per_sample(fn: Callable[[int], Any], n: int, warmup: int, length: int) -> dict[str, float]:
    """``n`` timed calls fn(k % length) after ``warmup`` untimed ones.

    samples_per_s is n / total time (what a worker sustains); the median ms per call is also kept,
    since on a shared machine the mean picks up other processes' bursts.
    """
    for k in range(warmup):
        fn(k % length)
    times = np.empty(n)
    for k in range(n):
        t0 = time.perf_counter()
        fn((warmup + k) % length)
        times[k] = time.perf_counter() - t0
    return {
        "samples_per_s": n / times.sum(),
        "ms_per_sample": 1000.0 * times.mean(),
        "median_ms": 1000.0 * float(np.median(times)),
        "samples": n,
    }


def measure_source(name: str, source, tfds_source, sizes, args) -> list[dict]:
    """All single-process stages of one source."""
    stages: list[tuple[str, Callable[[int], Any]]] = [
        ("decode floor", decode_only(source)),
        ("source read", source.__getitem__),
    ]
    if tfds_source is not None:
        stages.append(("tfds read", tfds_source.__getitem__))
    for size in sizes:
        cfg = sample_config(size)
        # A fixed rng per index: every run augments record i the same way.
        for label, src in (("sample", source), ("tfds sample", tfds_source)):
            if src is not None:
                stages.append(
                    (
                        f"{label} {size[0]}x{size[1]}",
                        lambda i, cfg=cfg, src=src: train_sample(src[i], np.random.default_rng(args.seed + i), cfg),
                    )
                )
    rows = []
    for stage, fn in stages:
        r = time_per_sample(fn, args.samples, args.warmup, len(source))
        rows.append({"source": name, "stage": stage, **r})
        print(
            f"  {name:10s} {stage:18s} {r['samples_per_s']:8.1f} samples/s  {r['ms_per_sample']:7.2f} ms "
            f"(median {r['median_ms']:.2f})",
            flush=True,
        )
    return rows


def sample_bytes(name: str, source, sizes, args) -> list[dict]:
    """Bytes of one training sample per size: on the host; sent to the device as the train loop
    sends it (``step_inputs`` with the mix's ``dense_plan``: dense targets float16 and only where the
    source carries them); sent with every dense target whole (the lean batch before packing); and in
    the layout before the lean batch (every key, float32 image, host heatmaps)."""
    from hyper_sapiens_jax.training.batch import dense_plan, step_inputs

    rows = []
    for size in sizes:
        cfg = sample_config(size)
        sample = train_sample(source[0], np.random.default_rng(args.seed), cfg)
        batch = {k: np.asarray(v)[None] for k, v in sample.items()} | {"source_id": np.zeros(1, np.int32)}
        host = sum(np.asarray(v).nbytes for v in sample.values())
        device = sum(v.nbytes for v in step_inputs(batch, plan=dense_plan([source])).values())
        whole = sum(v.nbytes for v in step_inputs(batch).values())
        heatmap_bytes = 4 * cfg.heatmap_wh[0] * cfg.heatmap_wh[1] * cfg.num_keypoints
        before = host + 3 * sample["image"].nbytes + heatmap_bytes
        row = {"source": name, "size": list(size), "host_bytes": host, "device_bytes": device}
        row |= {"whole_dense_bytes": whole, "before_bytes": before, "before_over_device": before / device}
        rows.append(row)
        print(
            f"  {name:10s} {size[0]}x{size[1]}: {before / 1e6:.1f} MB before -> {device / 1e6:.2f} MB to the device "
            f"({before / device:.1f}x fewer; {whole / 1e6:.1f} MB with whole dense targets; host sample "
            f"{host / 1e6:.1f} MB)",
            flush=True,
        )
    return rows


STAGE_CONFIGS = {s: Path(__file__).resolve().parents[1] / "configs" / f"{s}.py" for s in ("stage1", "stage2", "stage3")}


def stage_mixes() -> dict[str, dict[str, int]]:
    """Stage name -> its ``data.mix`` (source -> weight), read from ``configs/stageN.py``."""
    from hyper_sapiens_jax.config import load_config_file

    return {stage: dict(load_config_file(path).data.mix) for stage, path in STAGE_CONFIGS.items()}


def stage_bytes(rows: list[dict]) -> list[dict]:
    """Mean device bytes per sample of each stage's mix (``configs/stageN.py``'s ``data.mix``), from
    the per-source rows of ``sample_bytes``; stages whose sources were not all measured are left out."""
    out = []
    for stage, mix in stage_mixes().items():
        for size in {tuple(r["size"]) for r in rows}:
            per = {r["source"]: r for r in rows if tuple(r["size"]) == size}
            if not set(mix) <= set(per):
                continue
            n = sum(mix.values())
            device = sum(w * per[s]["device_bytes"] for s, w in mix.items()) / n
            before = sum(w * per[s]["before_bytes"] for s, w in mix.items()) / n
            out.append({"stage": stage, "mix": mix, "size": list(size), "device_bytes": device, "before_bytes": before})
            print(
                f"  {stage} {mix} {size[0]}x{size[1]}: {before / 1e6:.1f} MB -> {device / 1e6:.2f} MB a sample "
                f"({before / device:.1f}x fewer)",
                flush=True,
            )
    return out


def worker_cores(
    rows: list[dict], size: tuple[int, int], archs: list[str], peak_tflops: float, mfu: float
) -> list[dict]:
    """Worker cores one accelerator needs to feed each stage's mix at ``size``: the images/s of
    ``arch`` at ``mfu`` of ``peak_tflops`` (analytic train FLOPs per image, pose head alone and all
    three heads) over the samples/s one worker gives for that mix (its sources' mean time per sample,
    weighted by the mix; the TFDS rows where measured). An estimate from measured worker rates and
    an assumed step rate, not a measured GPU run."""
    from hyper_sapiens_jax.models.arch import ModelConfig
    from hyper_sapiens_jax.training.flops import train_flops_per_image_analytic

    ms = {}
    for stage in (f"sample {size[0]}x{size[1]}", f"tfds sample {size[0]}x{size[1]}"):  # TFDS rows win
        ms |= {r["source"]: r["ms_per_sample"] for r in rows if r["stage"] == stage}
    out = []
    for stage, mix in stage_mixes().items():
        if not set(mix) <= set(ms):
            continue
        per_worker = 1000.0 * sum(mix.values()) / sum(w * ms[s] for s, w in mix.items())
        for arch in archs:
            for heads in (("pose",), ("pose", "depth", "normal")):
                flops = train_flops_per_image_analytic(ModelConfig(arch=arch, image_size=size, heads=heads))
                img_per_s = peak_tflops * 1e12 * mfu / flops
                row = {"stage": stage, "arch": arch, "heads": list(heads), "img_per_s": img_per_s}
                row |= {"worker_samples_per_s": per_worker, "cores": img_per_s / per_worker}
                out.append(row)
                print(
                    f"  {stage} {arch} {'+'.join(heads)}: {img_per_s:.1f} img/s at {mfu:.0%} of {peak_tflops:g} "
                    f"TFLOP/s, a worker gives {per_worker:.1f}/s -> {img_per_s / per_worker:.1f} cores",
                    flush=True,
                )
    return out


def tfds_sources(paths, names: list[str], cache: Path) -> dict[str, Any]:
    """TfdsRecordSource per name, built once into ``cache`` (TFDS reuses a complete build)."""
    from hyper_sapiens_jax.data import tfds_builders as tb

    out = {}
    if {"syrip_real", "syrip_syn"} & set(names):
        syrip = tb.build_dataset("syrip", paths.syrip, cache)
        out |= {n: tb.TfdsRecordSource(syrip, n.replace("syrip_", "train_")) for n in ("syrip_real", "syrip_syn")}
    if "mini_rgbd" in names:
        seqs = ",".join(s.name for s in paths.sequences)
        mini = tb.build_dataset("mini_rgbd", paths.mini_rgbd, cache, splits={"train": seqs})
        out["mini_rgbd"] = tb.TfdsRecordSource(mini, "train")
    return out


def measure_workers(name: str, source, size, args) -> dict:
    """The full Grain train_iterator (shuffle, random map, batch; mp_prefetch) on one source."""
    from absl import flags

    from hyper_sapiens_jax.data.pipeline import MixEntry, train_dataset, train_iterator

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()  # grain 0.2.18's mp_prefetch reads absl flags
    batch = args.worker_batch
    warm_batches = max(2, args.workers * 2)
    timed_batches = max(1, args.samples // batch)
    ds = train_dataset(
        [MixEntry(name, source, batch)], sample_config(size), seed=args.seed, num_batches=warm_batches + timed_batches
    )
    it = train_iterator(ds, worker_count=args.workers)
    for _ in range(warm_batches):  # includes starting the worker processes
        next(it)
    start = time.perf_counter()
    for _ in range(timed_batches):
        next(it)
    seconds = time.perf_counter() - start
    it.close()  # stop the workers now, not in __del__ at interpreter exit
    del it
    total = timed_batches * batch / seconds
    row = {
        "source": name,
        "stage": f"grain {args.workers}w {size[0]}x{size[1]}",
        "samples_per_s": total,
        "per_worker_samples_per_s": total / args.workers,
        "samples": timed_batches * batch,
        "ms_per_sample": 1000.0 / total,
    }
    print(
        f"  {name:10s} {row['stage']:18s} {total:8.1f} samples/s  ({total / args.workers:.1f} per worker)", flush=True
    )
    return row


def print_table(rows: list[dict], names: list[str]) -> None:
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    width = max(18, *(len(s) for s in stages))
    print("\nsamples/s per worker (mean ms/sample); 'grain Nw' rows: all N workers together")
    print(f"{'':{width}s}" + "".join(f"{n:>22s}" for n in names))
    for stage in stages:
        cells = []
        for n in names:
            r = next((r for r in rows if r["source"] == n and r["stage"] == stage), None)
            cells.append(f"{r['samples_per_s']:9.1f} ({r['ms_per_sample']:7.2f})" if r else "-")
        print(f"{stage:{width}s}" + "".join(f"{c:>22s}" for c in cells))


def environment(args) -> dict:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "numpy": np.__version__,
        "load_average": os.getloadavg(),
        "argv": sys.argv,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--testbed-dir",
        type=Path,
        default=DEFAULT_TESTBED,
        help="testbed cache (generated with write_testbed's default parameters if absent)",
    )
    p.add_argument(
        "--sources", default="syrip_real,syrip_syn,mini_rgbd", help="comma list of syrip_real, syrip_syn, mini_rgbd"
    )
    p.add_argument(
        "--sizes",
        type=lambda s: [parse_size(x) for x in s.split(",")],
        default=[(1024, 768), (256, 192)],
        help="comma list of HxW input sizes",
    )
    p.add_argument("--samples", type=int, default=100, help="timed samples per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed samples first")
    p.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads (per-worker: 1)")
    p.add_argument(
        "--tfds",
        action="store_true",
        help="also time reads from the TFDS ArrayRecord build (cached under <testbed-dir>/tfds)",
    )
    p.add_argument("--workers", type=int, default=0, help="also time Grain train_iterator with N workers")
    p.add_argument("--worker-batch", type=int, default=8, help="per-step batch for --workers")
    p.add_argument("--worker-size", type=parse_size, default=(256, 192), help="input size for --workers")
    p.add_argument("--batch-bytes", action="store_true", help="also report the bytes per sample (host, device)")
    p.add_argument(
        "--cores-for",
        default="",
        help="comma list of archs (e.g. sapiens_0.3b,sapiens_1b): estimate the worker cores one accelerator "
        "needs per stage mix at the first --sizes, from --peak-tflops and --mfu",
    )
    p.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak for --cores-for (H100/H200 bf16)")
    p.add_argument("--mfu", type=float, default=0.5, help="assumed model FLOPs utilisation for --cores-for")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    names = [n.strip() for n in args.sources.split(",") if n.strip()]
    unknown = set(names) - {"syrip_real", "syrip_syn", "mini_rgbd"}
    if unknown:
        parser().error(f"unknown --sources {sorted(unknown)}")
    cv2.setNumThreads(args.threads)
    start = time.perf_counter()
    paths = write_testbed(args.testbed_dir)  # reused when already there with these parameters
    print(f"testbed {args.testbed_dir} ready in {time.perf_counter() - start:.1f} s", flush=True)
    sources = build_sources(paths, names)
    tfds = tfds_sources(paths, names, args.testbed_dir / "tfds") if args.tfds else {}
    rows = []
    for name, src in sources.items():
        print(f"{name}: {len(src)} records", flush=True)
        rows += measure_source(name, src, tfds.get(name), args.sizes, args)
    for name, src in sources.items() if args.workers else ():
        rows.append(measure_workers(name, src, args.worker_size, args))
    print_table(rows, names)
    sizes = (
        [r for name, src in sources.items() for r in sample_bytes(name, src, args.sizes, args)]
        if args.batch_bytes
        else []
    )
    stages = stage_bytes(sizes) if sizes else []
    archs = [a.strip() for a in args.cores_for.split(",") if a.strip()]
    cores = worker_cores(rows, args.sizes[0], archs, args.peak_tflops, args.mfu) if archs else []
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "environment": environment(args),
                    "testbed": str(args.testbed_dir),
                    "results": rows,
                    "bytes": sizes,
                    "stage_bytes": stages,
                    "cores": cores,
                },
                indent=2,
            )
        )
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
