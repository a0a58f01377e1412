"""The experiment config's defaults (``base_config``) and helpers; the files in ``configs/`` start from them.

The three config places: ``configs/*.py`` (one file per job, what you pass to ``--config``), this
module (the defaults every job shares), and ``models/arch.py`` (the architecture presets and the
model's own dataclass, saved next to the weights as ``model_config.json``).

Config files follow big_vision: ``get_config(arg)`` where ``arg`` names the arch (``tiny``,
``sapiens_0.3b`` (default), ``sapiens_0.6b``, ``sapiens_1b``, ``sapiens_2b``), selected on the
command line as ``--config configs/stage2.py:tiny``; any field can be overridden with
``--config.data.syrip_real_ann=/path/to/file.json``.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_collections

from hyper_sapiens_jax.models.arch import ARCHS

DEFAULT_ARCH = "sapiens_0.3b"
# Presets sized for CPUs: they read the synthetic testbed by default (config.data.source='testbed'),
# compute in float32 at a small input size. The Sapiens presets read files (source='files').
CPU_ARCHS = {"tiny": (64, 48), "cpu": (128, 96)}
# Where the synthetic testbed is generated when config.data.source is "testbed" (cached by its parameters).
DEFAULT_TESTBED_DIR = str(Path("~/.cache/hyper_sapiens_jax/testbed").expanduser())
DEFAULT_HUMANS_DIR = str(Path("~/.cache/hyper_sapiens_jax/humans").expanduser())
DEFAULT_TUNING_DIR = str(Path("~/.cache/hyper_sapiens_jax/tuning").expanduser())


def parse_arch(arg: str | None) -> str:
    """The ``get_config`` argument -> arch name (empty means the default)."""
    arch = (arg or DEFAULT_ARCH).strip()
    if arch not in ARCHS:
        raise ValueError(f"config argument {arch!r} is not an arch; use one of {', '.join(ARCHS)}")
    return arch


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    """A config as plain JSON data (what runs write next to their checkpoints)."""
    return json.loads(config.to_json_best_effort())


def load_config_file(path: str | Path, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of a config file given by path (how configs/demo.py reuses the stage files)."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    if spec is None or not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def parse_unfreeze(schedule: Any) -> list[tuple[float, int | None]]:
    """A progressive unfreezing schedule ``((FRACTION, BLOCKS), ...)`` -> [(FRACTION, BLOCKS or None)],
    in the order given. FRACTION in [0, 1] is where in the run (of ``num_steps``) BLOCKS trainable
    blocks start (an int >= 0, or None / 'all' for everything); ``training.adapters.unfreeze_schedule``
    turns it into steps once the config's overrides are in, so ``--config.num_steps=...`` moves it
    along. On the command line: ``--config.unfreeze="((0.5, 3), (0.8, 'all'))"``. A ValueError names
    a bad item."""
    out = []
    for item in schedule:
        try:
            fraction, blocks = item
            blocks = None if blocks is None or blocks == "all" else blocks
            if isinstance(fraction, (bool, str)) or not 0.0 <= float(fraction) <= 1.0:
                raise ValueError
            if blocks is not None and (isinstance(blocks, (bool, float)) or int(blocks) != blocks or blocks < 0):
                raise ValueError
            out.append((float(fraction), None if blocks is None else int(blocks)))
        except (TypeError, ValueError):
            raise ValueError(
                f"config.unfreeze item {item!r} is not (FRACTION, BLOCKS): FRACTION of num_steps in [0, 1], "
                "BLOCKS an int >= 0, None or 'all' (e.g. config.unfreeze = ((0.5, 'all'),))"
            ) from None
    return out


def stage_blocks(arch: str, stage: int) -> int | None:
    """Trainable ViT blocks per stage (None: all). The tiny test model trains from scratch, so it
    trains everything in stage 1; the other presets start from pretrained weights (Sapiens, or the
    testbed foundation for ``cpu``) and tune the last half (stage 1) or quarter (stages 2 and 3,
    stage 2 unfreezing to half mid-way)."""
    layers = ARCHS[arch].num_layers
    if arch == "tiny":
        return None if stage == 1 else layers // 2
    return layers // 2 if stage == 1 else layers // 4


class ConfigError(ValueError):
    """A config value or file cannot describe a run; the message names the field and the value."""


# ---------------------------------------------------------------------------------------------
# Constraints on config values, declared once: ``check_values`` applies them to every job's config
# at start-up (``jobs.run_job``, the fine-tuning adapters, the preview). A key names a field by its
# dotted path's tail, so it guards that field in every config and in nested ones (configs/demo.py's
# ``stage1.optim.lr``, ``prior.ema_decay``); a ``*`` matches within one name (``*_prob``).
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Constraint:
    """``test(value)`` must hold; ``text`` says what the value must be ("a finite number > 0")."""

    test: Callable[[Any], bool]
    text: str


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def number(lo: float | None = None, hi: float | None = None, *, open_lo=False, open_hi=False, integer=False):
    """A finite number (an int with ``integer``) in [lo, hi] (either end open or absent)."""

    def test(v: Any) -> bool:
        if not _is_number(v) or (integer and not isinstance(v, int)):
            return False
        above = lo is None or (v > lo if open_lo else v >= lo)
        return above and (hi is None or (v < hi if open_hi else v <= hi))

    kind = "an integer" if integer else "a finite number"
    if lo is not None and hi is not None:
        return Constraint(test, f"{kind} in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}")
    if lo is not None:
        return Constraint(test, f"{kind} {'>' if open_lo else '>='} {lo}")
    return Constraint(test, kind)


def pair(item: Constraint, *, ordered: bool = True) -> Constraint:
    """Two values, each ``item`` (and with ``ordered`` the first <= the second): a range or a size."""

    def test(v: Any) -> bool:
        if not isinstance(v, (tuple, list)) or len(v) != 2 or not all(item.test(x) for x in v):
            return False
        return not ordered or v[0] <= v[1]

    return Constraint(test, f"two values, each {item.text}{' (low, high)' if ordered else ''}")


def one_of(*values: Any) -> Constraint:
    return Constraint(lambda v: v in values, f"one of {list(values)}")


POSITIVE = number(0, open_lo=True)
NON_NEGATIVE = number(0)
POSITIVE_INT = number(1, integer=True)
COUNT = number(0, integer=True)
PROBABILITY = number(0, 1)
DECAY = number(0, 1, open_hi=True)

CONSTRAINTS: dict[str, Constraint] = {
    # Steps, batches and intervals (top level; the prior's own names).
    "num_steps": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "eval_batch_size": POSITIVE_INT,
    "micro_batches": POSITIVE_INT,
    "log_every": POSITIVE_INT,
    "eval_every": POSITIVE_INT,
    "checkpoint_every": POSITIVE_INT,
    "steps_per_call": POSITIVE_INT,
    "eval_batches": POSITIVE_INT,
    "peak_tflops": NON_NEGATIVE,
    "ema_decay": DECAY,
    # config.optim (fine-tuning, pretraining, the prior)
    "optim.lr": POSITIVE,
    "optim.layer_decay": number(0, 1, open_lo=True),  # 1: no layer-wise decay
    "optim.weight_decay": NON_NEGATIVE,
    "optim.b1": DECAY,
    "optim.b2": DECAY,
    "optim.grad_clip": NON_NEGATIVE,  # 0: no clipping
    "optim.warmup_steps": COUNT,
    "optim.final_lr_frac": PROBABILITY,
    # config.loss: weights >= 0; sds_final < 0 means "no annealing"
    **{f"loss.{w}": NON_NEGATIVE for w in ("pose", "coord", "depth", "normal", "depth_normal", "bone_ratio")},
    **{f"loss.{w}": NON_NEGATIVE for w in ("limb_rigidity", "sds", "near", "extent")},
    "loss.sds_final": number(),
    "loss.sds_t_min": number(0, 1, open_lo=True),
    "loss.sds_t_max": number(0, 1, open_lo=True),
    "keypoint_conf": PROBABILITY,
    # config.eval, config.checkpoint: keep >= 1, so no setting deletes the last complete checkpoint
    "eval.every": POSITIVE_INT,
    "eval.pck_threshold": number(0, 1, open_lo=True),
    "eval.pck_norm": one_of("bbox", "torso"),
    "eval.blur_kernel": COUNT,  # 0: the DARK kernel rule; else an odd size (the decoder checks oddness)
    "checkpoint.every": POSITIVE_INT,
    "checkpoint.keep": POSITIVE_INT,
    "checkpoint.keep_best": COUNT,
    "keep_checkpoints": POSITIVE_INT,
    "distributed.num_processes": POSITIVE_INT,
    "distributed.heartbeat_timeout_s": POSITIVE,
    # config.model
    "model.image_size": pair(POSITIVE_INT, ordered=False),
    "model.num_keypoints": POSITIVE_INT,
    "model.head_dropout": DECAY,
    "mae.mask_ratio": DECAY,
    # config.data
    "data.heatmap_sigma": POSITIVE,
    "data.focal_factor": POSITIVE,
    "data.unlabeled_min_score": number(),
    "data.num_unlabeled": COUNT,
    "data.num_labeled": COUNT,
    "data.worker_count": COUNT,
    "data.tuning_images": COUNT,
    "data.mix.*": COUNT,
    "testbed.num_*": COUNT,
    "testbed.frames_per_sequence": POSITIVE_INT,
    "humans.num_train": POSITIVE_INT,
    "humans.num_val": COUNT,
    "humans.image_size": pair(POSITIVE_INT, ordered=False),
    "humans.framing": one_of("group", "person"),
    "humans.roll_deg": number(0, 180),
    "humans.top_down": PROBABILITY,
    "humans.lying_share": PROBABILITY,
    # augmentation (config.data.aug, the semi-supervised weak view, the prior's joint dropout)
    "*_prob": PROBABILITY,
    "dropout.prob": PROBABILITY,
    "dropout.max_rate": PROBABILITY,
    "bbox_padding": POSITIVE,
    "shift_factor": NON_NEGATIVE,
    "scale_range": pair(POSITIVE),
    "rotate_factor": NON_NEGATIVE,
    "brightness_delta": NON_NEGATIVE,
    "contrast_range": pair(NON_NEGATIVE),
    "saturation_range": pair(NON_NEGATIVE),
    "hue_delta": NON_NEGATIVE,
    "dropout_size_range": pair(PROBABILITY),
    # config.semisup
    "semisup.unlabeled_batch": POSITIVE_INT,
    "semisup.conf_threshold": PROBABILITY,
    "semisup.kps_threshold": PROBABILITY,
    "semisup.denoise_t": number(0, 1, open_lo=True),
    "semisup.denoise_steps": POSITIVE_INT,
    **{f"semisup.{w}": NON_NEGATIVE for w in ("cons", "dev", "rigidity", "orthogonality", "depth_scale")},
}


def constraint_for(path: str) -> tuple[str, Constraint] | None:
    """The (key, constraint) of CONSTRAINTS that guards the dotted field ``path``, if any: the key
    matches the path's last names (``*`` within a name); the longest key wins."""
    names = path.split(".")
    matches = [
        (key, c)
        for key, c in CONSTRAINTS.items()
        if key.count(".") < len(names) and fnmatch.fnmatchcase(".".join(names[-key.count(".") - 1 :]), key)
    ]
    return max(matches, key=lambda m: m[0].count("."), default=None)


def _leaves(config: Mapping | ml_collections.ConfigDict, prefix: str = ""):
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, (Mapping, ml_collections.ConfigDict)):
            yield from _leaves(value, path + ".")
        else:
            yield path, value


def check_values(config: Mapping | ml_collections.ConfigDict) -> None:
    """Refuse, with one ``ConfigError`` naming every bad field and its value, a config (any job's,
    nested ones included) whose values break ``CONSTRAINTS``."""
    bad = []
    for path, value in _leaves(config):
        found = constraint_for(path)
        if found is not None and not found[1].test(value):
            bad.append(f"config.{path}={value!r} must be {found[1].text}")
    if bad:
        raise ConfigError("; ".join(bad))


def base_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """Fields shared by every stage; the stage files set ``stage``, ``data.mix`` and the schedule."""
    arch = parse_arch(arg)
    tiny = arch == "tiny"
    cpu_sized = arch in CPU_ARCHS
    c = ml_collections.ConfigDict()
    c.job = "finetune"
    c.arch = arch
    c.stage = 0
    c.seed = 0
    c.batch_size = 16  # global, across all processes
    c.micro_batches = 1  # gradient accumulation: batch_size / micro_batches per pass
    c.eval_batch_size = 16
    c.num_steps = 600 if cpu_sized else 10_000
    c.log_every = 50
    c.peak_tflops = 0.0  # per device, for the MFU estimate (0: detect from the device)

    # Initial weights: a converted Sapiens checkpoint (convert_weights.torch_to_flax) or a previous
    # stage's workdir (its latest checkpoint; EMA weights unless init_from_ema=False). Empty: random.
    c.init_from = ""
    c.init_from_ema = True
    c.prior_ckpt = ""  # a prior workdir (configs/prior.py); needed when loss.sds > 0

    # Trainable subset: the last `trainable_blocks` ViT blocks + pos_embed + final norm + heads
    # (None: everything). `unfreeze` is a progressive schedule ((FRACTION, BLOCKS), ...) (BLOCKS may
    # be 'all'), applied on top of trainable_blocks from FRACTION * num_steps on; empty: none.
    c.trainable_blocks = ml_collections.FieldReference(None, field_type=int)
    # False: pos_embed freezes with the prefix, so the backward stops at the first trainable block
    # (trainable_blocks=0: only the final norm and the heads train; the backbone runs forward only).
    c.train_pos_embed = True
    c.unfreeze = ()
    # Heads that never train (the semi-supervised mode keeps 'depth' and 'normal' as frozen teachers).
    c.frozen_heads = ()

    # The Sapiens AdamW (docs/design.md §4): warm-up from lr * 1e-3, cosine to lr * final_lr_frac.
    c.optim = ml_collections.ConfigDict(
        dict(
            lr=5e-4,
            layer_decay=0.85,
            weight_decay=0.1,
            b1=0.9,
            b2=0.999,
            grad_clip=1.0,
            warmup_steps=50 if cpu_sized else 500,
            final_lr_frac=0.01,
        )
    )
    c.ema_decay = 0.99 if cpu_sized else 0.999

    # Loss weights. beta (geometry) = depth_normal / bone_ratio; alpha (prior) = sds, linearly
    # annealed to sds_final over the stage when sds_final >= 0 (stage 3).
    c.loss = ml_collections.ConfigDict(
        dict(
            pose=1.0,
            coord=0.0,
            depth=1.0,
            normal=1.0,
            depth_normal=0.0,
            bone_ratio=0.0,
            limb_rigidity=0.0,
            sds=0.0,
            sds_final=-1.0,
            geometry_on_real_only=True,
            near=0.7,
            extent=0.25,
            keypoint_conf=0.3,
            sds_t_min=0.01,
            sds_t_max=0.05,
            sds_weighting="one_minus_alpha_bar",
            geometry_keypoints="soft",
            bone_ratio_grad="both",
            bone_reference="crops",
        )
    )

    # Validation (flip test, DARK-UDP decode) on the "val" split: PCK@pck_threshold normalised by the
    # box's longer side ("bbox") or the torso ("torso"), COCO OKS AP, G-Error. blur_kernel 0: the DARK
    # kernel rule of the heatmap size and sigma (data/codec.py dark_blur_kernel: 11 at Sapiens size).
    c.eval = ml_collections.ConfigDict(
        dict(every=200 if cpu_sized else 1000, flip_test=True, pck_threshold=0.05, pck_norm="bbox", blur_kernel=0)
    )
    # Orbax: async saves every `every` steps (and at evaluations, on preemption/SIGTERM, at the end);
    # the latest `keep` and the `keep_best` best by validation PCK are kept.
    c.checkpoint = ml_collections.ConfigDict(dict(every=200 if cpu_sized else 1000, keep=2, keep_best=1))
    # Multi-host: jax.distributed.initialize(...) runs when coordinator_address is set (or when
    # auto=True, for TPU pods / SLURM where JAX detects the cluster).
    # cpu_collectives: "gloo" for multi-process CPU runs. heartbeat_timeout_s: a process whose peer
    # has died (killed, host lost) stops with an error after this long instead of waiting forever.
    c.distributed = ml_collections.ConfigDict(
        dict(
            coordinator_address="",
            num_processes=1,
            process_id=0,
            auto=False,
            cpu_collectives="",
            heartbeat_timeout_s=100,
        )
    )

    c.model = ml_collections.ConfigDict()
    # CPU-sized presets train on 2 CPU cores: a small input keeps their steps short.
    c.model.image_size = CPU_ARCHS.get(arch, (1024, 768))  # (H, W)
    c.model.heads = ("pose", "depth", "normal")
    c.model.patch_padding = 2
    c.model.num_keypoints = 17
    c.model.dtype = "float32" if cpu_sized else "bfloat16"
    c.model.attention = "xla"
    c.model.remat = not cpu_sized
    c.model.remat_heads = not cpu_sized  # the heads' full-resolution activations dominate at 1024x768
    c.model.scan_blocks = arch in ("sapiens_1b", "sapiens_2b")
    c.model.head_dropout = 0.1  # Dropout2d before the depth/normal output convs

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by fsdp
    c.mesh.fsdp = 1

    c.data = data_config(cpu_sized, tiny)
    return c


def data_config(cpu_sized: bool, tiny: bool) -> ml_collections.ConfigDict:
    """``config.data``'s defaults: where the data comes from, the mix, the testbed and corpus sizes,
    and the Sapiens augmentation recipe (milder for the ``tiny`` preset)."""
    d = ml_collections.ConfigDict()
    # Where the data comes from: 'testbed' (the synthetic infant testbed under testbed_dir) or 'files'
    # (the paths below, every one a run needs must be set). CPU-sized presets default to the testbed.
    d.source = "testbed" if cpu_sized else "files"
    # Real data (COCO keypoint files + image folders, MINI-RGBD root), read when source='files'.
    d.syrip_syn_ann = ""
    d.syrip_syn_images = ""
    d.syrip_real_ann = ""
    d.syrip_real_images = ""
    d.mini_rgbd_root = ""
    d.mini_rgbd_sequences = tuple(range(1, 9))  # sequence numbers: 01 ... 08
    d.val_ann = ""
    d.val_images = ""
    d.skeletons = ""
    # Unlabelled images (the semi-supervised mode): a folder, optionally with person boxes from a
    # detector (a COCO detection-results JSON with the COCO image list it refers to, or a COCO image
    # list with boxes); without boxes each whole image is one box. The testbed makes num_unlabeled.
    d.unlabeled_images = ""
    d.unlabeled_boxes = ""
    d.unlabeled_image_list = ""
    d.unlabeled_min_score = 0.0
    d.num_unlabeled = 400
    # > 0: train on this many labelled records of each mix source (a seeded subset, labeled_seed).
    d.num_labeled = 0
    d.labeled_seed = 0
    d.skip_bad_records = False
    # Integer ratio weights per source; each global batch holds exactly batch_size * w / sum(w).
    d.mix = ml_collections.ConfigDict({"syrip_syn": 1, "mini_rgbd": 1})
    d.worker_count = 0  # Grain worker processes (0: decode in the main process)
    d.heatmap_sigma = 2.0 if cpu_sized else 6.0  # at heatmap resolution (H/4, W/4): 6 at 256x192 (Sapiens)
    d.focal_factor = 1.0  # uncalibrated images: focal = focal_factor x max(H, W) pixels
    d.testbed_dir = DEFAULT_TESTBED_DIR
    # The human corpus (adults and children, testbed/humans.py): the 'humans' source of the mix and
    # the testbed foundation's pretraining data; generated once, cached by its parameters.
    d.humans_dir = DEFAULT_HUMANS_DIR
    # The corpus's views (testbed/humans.py Views): framing 'group' | 'person', camera roll range,
    # the share seen from above, the share lying down (0: the default posture table).
    d.humans = ml_collections.ConfigDict(
        dict(
            num_train=20000,
            num_val=300,
            image_size=(160, 128),
            seed=0,
            framing="group",
            roll_deg=8.0,
            top_down=0.0,
            lying_share=0.0,
        )
    )
    # Hyperparameter tuning without the validation split: > 0 holds this many real training images
    # out (seeded by tuning_seed) and evaluates on them instead of "val" (data/tuning.py).
    d.tuning_images = 0
    d.tuning_seed = 0
    d.tuning_dir = DEFAULT_TUNING_DIR
    d.testbed = ml_collections.ConfigDict(
        dict(
            num_syn=600,
            num_real=200,
            num_val=200,
            num_sequences=2,
            frames_per_sequence=100,
            num_skeletons=10000,
            seed=0,
        )
    )

    # The Sapiens recipe (docs/design.md §4). The tiny model, trained from scratch in minutes, gets a milder
    # geometry (no rotation, half-body or dropout): it needs ~400 steps to leave the mean-heatmap
    # plateau even without them.
    d.aug = ml_collections.ConfigDict(
        dict(
            bbox_padding=1.25,
            flip_prob=0.5,
            half_body_prob=0.0 if tiny else 0.3,
            shift_factor=0.16,
            shift_prob=0.3,
            scale_range=(0.75, 1.25) if tiny else (0.5, 1.5),
            rotate_factor=30.0 if tiny else 80.0,
            rotate_prob=0.0 if tiny else 0.6,
            brightness_delta=32.0,
            contrast_range=(0.5, 1.5),
            saturation_range=(0.5, 1.5),
            hue_delta=18,
            blur_prob=0.1,
            median_blur_prob=0.1,
            noise_prob=0.0,
            jpeg_prob=0.0,
            dropout_prob=0.0 if tiny else 1.0,
            dropout_size_range=(0.2, 0.4),
        )
    )
    return d


def semisup_config(arg: str | None, stage: int) -> ml_collections.ConfigDict:
    """NK-Sapiens' stages on top of ``base_config``: 0 the supervised warm-up on the labelled data,
    1 the semi-supervised alignment (L_sup + λ_cons L_cons + λ_dev L_dev + λ_geo L_geo), 2 the same
    with the backbone frozen but for its last 2 blocks (and the pose head). The depth and normal
    heads are frozen teachers throughout (``frozen_heads``), so the supervised loss is pose only."""
    if stage not in (0, 1, 2):
        raise ValueError(f"semi-supervised stages are 0, 1 and 2, got {stage}")
    c = base_config(arg)
    layers = ARCHS[c.arch].num_layers
    c.job = "finetune" if stage == 0 else "semisup"
    c.stage = stage
    c.data.mix = ml_collections.ConfigDict({"syrip_real": 1})  # the labelled set
    c.loss.depth = c.loss.normal = 0.0
    c.frozen_heads = ("depth", "normal")
    c.trainable_blocks = 2 if stage == 2 else (None if c.arch == "tiny" else layers // 2)
    c.semisup = ml_collections.ConfigDict(
        dict(
            unlabeled_batch=c.batch_size,  # unlabelled samples per global batch (labelled: batch_size)
            teacher="hybrid",  # 'ema': the plain mean teacher (A only, no gate); 'hybrid': A or B by the gate
            conf_threshold=0.5,  # teacher A's mean joint peak above which it may label a sample
            kps_threshold=0.7,  # and its kinematic plausibility score above which
            keypoint_conf=0.3,  # a joint counts as visible above this heatmap peak
            denoise_t=0.1,  # teacher B / L_dev: Denoise(y, t) noises to t = denoise_t * T ...
            denoise_steps=5,  # ... and comes back in this many DDIM moves
            cons=c.loss.pose,  # λ_cons: the consistency term has the supervised pose term's form
            dev=1.0,  # λ_dev
            rigidity=0.1,  # λ_geo on limb rigidity with depth
            orthogonality=0.1,  # λ_geo on limb / normal orthogonality
            geometry_teacher="copy",  # 'copy': a frozen copy of the starting model; 'heads': the frozen heads
            depth_scale=1.0,  # a in sqrt(|dp|^2 + a dD^2) (p in crop heights, D relative depth)
            near=c.loss.near,
            extent=c.loss.extent,
            # The weak view: the box crop with a little scale / shift jitter, no flip, rotation or texture.
            weak_view=dict(
                flip_prob=0.0,
                rotate_prob=0.0,
                half_body_prob=0.0,
                scale_range=(0.9, 1.1),
                shift_prob=0.5,
                shift_factor=0.05,
            ),
        )
    )
    return c
