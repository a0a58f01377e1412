"""The base experiment config; ``configs/*.py`` files start from it and set their stage.

Config files follow big_vision: ``get_config(arg)`` where ``arg`` names the arch (``tiny``,
``sapiens_0.3b`` (default), ``sapiens_0.6b``, ``sapiens_1b``, ``sapiens_2b``), selected on the
command line as ``--config configs/stage2.py:tiny``; any field can be overridden with
``--config.data.syrip_real_ann=/path/to/file.json``.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from hyper_sapiens_jax.models.config import ARCHS

DEFAULT_ARCH = "sapiens_0.3b"
# Where the synthetic testbed is generated when no dataset path is set (cached by its parameters).
DEFAULT_TESTBED_DIR = str(Path("~/.cache/hyper_sapiens_jax/testbed").expanduser())


def parse_arch(arg: str | None) -> str:
    """The ``get_config`` argument -> arch name (empty means the default)."""
    arch = (arg or DEFAULT_ARCH).strip()
    if arch not in ARCHS:
        raise ValueError(f"config argument {arch!r} is not an arch; use one of {', '.join(ARCHS)}")
    return arch


def base_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Fields shared by every stage; the stage files set ``stage``, ``data.mix`` and the schedule."""
    arch = parse_arch(arg)
    tiny = arch == "tiny"
    c = ml_collections.ConfigDict()
    c.arch = arch
    c.stage = 0
    c.seed = 0
    c.batch_size = 16                      # global, across all processes
    c.eval_batch_size = 16

    c.model = ml_collections.ConfigDict()
    c.model.image_size = (256, 192) if tiny else (1024, 768)   # (H, W)
    c.model.heads = ("pose", "depth", "normal")
    c.model.patch_padding = 2
    c.model.num_keypoints = 17
    c.model.dtype = "float32" if tiny else "bfloat16"
    c.model.attention = "xla"
    c.model.remat = not tiny
    c.model.scan_blocks = arch in ("sapiens_1b", "sapiens_2b")

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1                       # -1: all devices not used by fsdp
    c.mesh.fsdp = 1

    d = c.data = ml_collections.ConfigDict()
    # Real data (COCO keypoint files + image folders, MINI-RGBD root). Empty: the testbed is used.
    d.syrip_syn_ann = ""
    d.syrip_syn_images = ""
    d.syrip_real_ann = ""
    d.syrip_real_images = ""
    d.mini_rgbd_root = ""
    d.mini_rgbd_sequences = "01-08"
    d.val_ann = ""
    d.val_images = ""
    d.skeletons = ""
    d.skip_bad_records = False
    # Integer ratio weights per source; each global batch holds exactly batch_size * w / sum(w).
    d.mix = ml_collections.ConfigDict({"syrip_syn": 1, "mini_rgbd": 1})
    d.worker_count = 0                     # Grain worker processes (0: decode in the main process)
    d.heatmap_sigma = 2.0 if tiny else 6.0  # at heatmap resolution (H/4, W/4)
    d.testbed_dir = DEFAULT_TESTBED_DIR
    d.testbed = ml_collections.ConfigDict(dict(
        num_syn=600, num_real=200, num_val=200, num_sequences=2, frames_per_sequence=100,
        num_skeletons=10000, seed=0))

    d.aug = ml_collections.ConfigDict(dict(
        bbox_padding=1.25, flip_prob=0.5, half_body_prob=0.3, shift_factor=0.16, shift_prob=0.3,
        scale_range=(0.5, 1.5), rotate_factor=80.0, rotate_prob=0.6,
        brightness_delta=32.0, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5), hue_delta=18,
        blur_prob=0.1, median_blur_prob=0.1, noise_prob=0.0, jpeg_prob=0.0, dropout_prob=1.0,
        dropout_size_range=(0.2, 0.4)))
    return c
