"""Where a pose model's error lies on a validation split: per joint, gross errors and left/right swaps,
and the precision of the joints it does find, in units of the box and of heatmap pixels.

  python benchmarks/keypoint_errors.py --weights hyper_sapiens_jax/testbed/foundation [--split humans]
  python benchmarks/keypoint_errors.py --weights W/stage3 --split infants [--out errors.json]

``--weights``: a weights directory (``convert_weights.torch_to_flax``'s output, or a training
workdir); the shipped foundation's Sapiens-layout files are converted first. ``--split humans`` is
the human corpus's held-out split (written under ``--corpus-dir`` on first use, default settings);
``infants`` the infant testbed's validation split (configs/stage1.py's data). Decoding is the
evaluation's: flip test, DARK-UDP with the kernel rule. The error of a joint is its distance to the
truth over the box's longer side (PCK's normaliser); a gross error is one above ``--gross`` (0.2),
a swap a gross error whose mirrored joint would be within 0.1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import ml_collections
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hyper_sapiens_jax.config import load_config_file  # noqa: E402
from hyper_sapiens_jax.data.codec import dark_blur_kernel, decode_udp_heatmaps  # noqa: E402
from hyper_sapiens_jax.data.keypoints import COCO17_NAMES, flip_permutation  # noqa: E402
from hyper_sapiens_jax.data.pipeline import eval_batches  # noqa: E402
from hyper_sapiens_jax.evaluation import metrics  # noqa: E402
from hyper_sapiens_jax.inference import load_predictor  # noqa: E402
from hyper_sapiens_jax.jobs import demo, inputs  # noqa: E402
from hyper_sapiens_jax.testbed.shipped import FOUNDATION_DIR, FOUNDATION_FILES  # noqa: E402


def split_config(split: str, corpus_dir: Path):
    """configs/stage1.py:cpu reading the infant validation split, or the human corpus's."""
    cfg = load_config_file(ROOT / "configs" / "stage1.py", "cpu")
    if split == "humans":
        cfg.data.humans_dir, cfg.data.humans.num_train = str(corpus_dir), 16  # only the val split is read
        corpus = inputs.corpus_paths(cfg.data)
        cfg.data.source, cfg.data.val_ann, cfg.data.val_images = "files", str(corpus.val_json), str(corpus.val_images)
    return cfg


def heatmaps_and_truth(weights: str, cfg) -> dict[str, np.ndarray]:
    """Flip-tested pose heatmaps (N, h, w, K) of every valid sample, with its crop-space truth."""
    predictor = load_predictor(weights, flip_test=True)  # the mirrored pass averaged in, as evaluation does
    sample = inputs.sample_config(cfg)
    val = inputs.build_source("val", inputs.resolved_paths(cfg.data))
    keys = ("bbox", "scale", "keypoints", "keypoints_visible", "valid")
    rows: dict[str, list[np.ndarray]] = {}
    for b in eval_batches(val, sample, 32):
        rows.setdefault("heatmaps", []).append(np.asarray(predictor.forward(np.asarray(b["image"]))["pose"]))
        for k in keys:
            rows.setdefault(k, []).append(np.asarray(b[k]))
    out = {k: np.concatenate(v) for k, v in rows.items()}
    return {k: v[out["valid"] > 0] for k, v in out.items()} | {"input_wh": np.asarray(sample.input_wh)}


def error_table(r: dict[str, np.ndarray], sigma: float, gross: float = 0.2) -> dict:
    """Per-joint and overall PCK, gross-error and swap rates, and the precision of the rest."""
    w_in = int(r["input_wh"][0])
    hm = r["heatmaps"]
    kernel = dark_blur_kernel((hm.shape[2], hm.shape[1]), sigma)
    pred, _ = decode_udp_heatmaps(hm, input_wh=tuple(r["input_wh"]), blur_kernel_size=kernel)
    crop_per_image = w_in / r["scale"][:, 0]  # input pixels per image pixel
    box = metrics.bbox_normalizer(r["bbox"]) * crop_per_image  # the box's longer side, input pixels
    err = np.linalg.norm(pred - r["keypoints"], axis=-1) / box[:, None]
    mirrored = np.linalg.norm(pred[:, flip_permutation(hm.shape[-1])] - r["keypoints"], axis=-1) / box[:, None]
    seen = r["keypoints_visible"] > 0.5
    is_gross = seen & (err > gross)
    swap = is_gross & (mirrored < 0.1)
    heatmap_px = w_in / hm.shape[2]
    good = seen & ~is_gross
    per_joint = {
        name: {
            "pck@0.05": float(np.mean(err[seen[:, j], j] < 0.05)),
            "pck@0.1": float(np.mean(err[seen[:, j], j] < 0.1)),
            "gross": float(np.mean(is_gross[seen[:, j], j])),
            "swap": float(np.mean(swap[seen[:, j], j])),
        }
        for j, name in enumerate(COCO17_NAMES)
        if seen[:, j].any()
    }
    return {
        "samples": len(err),
        "blur_kernel": kernel,
        "box_input_px_median": float(np.median(box)),
        "threshold_heatmap_px_median": float(np.median(0.05 * box / heatmap_px)),
        "pck@0.05": float(np.mean(err[seen] < 0.05)),
        "pck@0.1": float(np.mean(err[seen] < 0.1)),
        "pck@0.2": float(np.mean(err[seen] < 0.2)),
        "gross": float(is_gross.sum() / seen.sum()),
        "swaps_among_gross": float(swap.sum() / max(1, is_gross.sum())),
        "median_error_of_the_rest": float(np.median(err[good])),
        "median_error_of_the_rest_heatmap_px": float(np.median((err * box[:, None])[good] / heatmap_px)),
        "per_joint": per_joint,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=str(FOUNDATION_DIR), help="weights directory, workdir or shipped foundation")
    p.add_argument("--split", choices=["humans", "infants"], default="humans", help="which validation split")
    p.add_argument(
        "--corpus-dir", default="", help="where the human corpus's val split is written (default: a temp dir)"
    )
    p.add_argument("--gross", type=float, default=0.2, help="a gross error: above this fraction of the box")
    p.add_argument("--out", default="", help="write the result as JSON here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if Path(weights).resolve() == FOUNDATION_DIR.resolve():  # Sapiens-layout files: convert as the demo does
            f = ml_collections.ConfigDict({"foundation": {"dir": str(FOUNDATION_DIR), **FOUNDATION_FILES}})
            weights = demo.prepare_foundation(f, Path(tmp), (128, 96))
        cfg = split_config(args.split, Path(args.corpus_dir or Path(tmp) / "humans"))
        result = error_table(heatmaps_and_truth(weights, cfg), cfg.data.heatmap_sigma, args.gross)
    print(json.dumps({k: v for k, v in result.items() if k != "per_joint"}, indent=1))
    for name, row in result["per_joint"].items():
        print(f"{name:15s} " + "  ".join(f"{k} {v:.2f}" for k, v in row.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
