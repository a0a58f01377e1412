"""``config.data`` -> what a job reads: dataset paths, the named sources, the training mix and the
sample settings. The jobs resolve their config's data section here, once, and hand paths, sources
and sample settings down; ``data/`` and ``testbed/`` never read a config.

Where the data comes from is explicit: ``config.data.source`` is

  'testbed'  the synthetic infant testbed, generated once (cached by its parameters) under
             ``config.data.testbed_dir`` and read through the same readers as real data;
  'files'    the dataset paths in ``config.data`` (SyRIP / any COCO keypoint set, MINI-RGBD,
             skeletons, unlabelled images). Every path a run needs must be set: a missing one stops
             the run with an error that names the fields, instead of quietly training on synthetic
             infants.

The 'humans' source is the testbed's human corpus (``config.data.humans``, written under
``config.data.humans_dir`` whatever ``source`` says). The 'unlabeled' source (semi-supervised
training; not a mix source, it has no labels) is person boxes on unlabelled images
(``data.unlabeled.UnlabeledSource``): with 'files' the folder ``config.data.unlabeled_images``
(required) and, optionally, ``unlabeled_boxes`` (a COCO detection list or image list with boxes),
``unlabeled_image_list`` (the COCO image list a detection list refers to) and
``unlabeled_min_score``; with 'testbed' the testbed's unlabelled split (``testbed/unlabeled_split.py``,
``config.data.num_unlabeled`` images under ``testbed_dir / "unlabeled"``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ml_collections

from hyper_sapiens_jax.config import ConfigError
from hyper_sapiens_jax.data import catalog
from hyper_sapiens_jax.data import transforms as T
from hyper_sapiens_jax.data.catalog import SOURCE_DOMAINS, Subset
from hyper_sapiens_jax.data.pipeline import MixEntry, mix_counts
from hyper_sapiens_jax.data.topdown import SampleConfig
from hyper_sapiens_jax.data.tuning import carve
from hyper_sapiens_jax.testbed.humans import HumansPaths, HumansSource, Views, write_humans
from hyper_sapiens_jax.testbed.unlabeled_split import DEFAULT_IMAGE_SIZE, write_unlabeled
from hyper_sapiens_jax.testbed.writer import write_testbed
from hyper_sapiens_jax.training.trainer import RunData

log = logging.getLogger(__name__)

DATA_SOURCES = ("testbed", "files")
# Source name -> the config.data fields it needs ('val' is the evaluation split, 'skeletons' the prior's,
# 'unlabeled' the semi-supervised unlabelled images: not a mix source, so not in SOURCE_DOMAINS).
SOURCE_FIELDS = {
    "syrip_syn": ("syrip_syn_ann", "syrip_syn_images"),
    "syrip_real": ("syrip_real_ann", "syrip_real_images"),
    "mini_rgbd": ("mini_rgbd_root",),
    "val": ("val_ann", "val_images"),
    "skeletons": ("skeletons",),
    "humans": (),
    "unlabeled": ("unlabeled_images",),
}
# Source name -> the path fields it reads when they are set (with source='testbed' they must not be).
OPTIONAL_FIELDS = {"unlabeled": ("unlabeled_boxes", "unlabeled_image_list")}
_PATH_FIELDS = tuple(
    dict.fromkeys(f for table in (SOURCE_FIELDS, OPTIONAL_FIELDS) for fields in table.values() for f in fields)
)


def data_source(data: ml_collections.ConfigDict) -> str:
    """``config.data.source``, checked."""
    source = data.get("source", "testbed")
    if source not in DATA_SOURCES:
        raise ConfigError(f"config.data.source={source!r} is not one of {DATA_SOURCES}")
    return source


def check_paths(data: ml_collections.ConfigDict, needs: Iterable[str]) -> None:
    """With ``source='files'``, every field the named sources read must be set; with 'testbed',
    none may be (a path given there would be silently ignored)."""
    needs = list(needs)
    unknown = [n for n in needs if n not in SOURCE_FIELDS]
    if unknown:
        raise ConfigError(f"unknown data sources {unknown}; known: {sorted(SOURCE_FIELDS)}")
    if data_source(data) == "testbed":
        given = [f"config.data.{f}" for f in _PATH_FIELDS if data.get(f)]
        if given:
            raise ConfigError(
                f"{', '.join(given)} set but config.data.source='testbed' (which ignores them): "
                f"set config.data.source=files to read your files"
            )
        return
    missing = [f"config.data.{f}" for n in needs for f in SOURCE_FIELDS[n] if not data.get(f)]
    if missing:
        users = ", ".join(f"'{n}'" for n in needs if any(f"config.data.{f}" in missing for f in SOURCE_FIELDS[n]))
        raise ConfigError(
            f"config.data.source='files' but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set (needed by the {users} "
            f"source{'s' if ',' in users else ''}); set them, or use config.data.source=testbed "
            f"for the synthetic testbed"
        )


def testbed_paths(data: ml_collections.ConfigDict):
    """Generate (or reuse) the testbed the config describes and return its ``Paths``."""
    log.info("config.data.source='testbed': the synthetic infant testbed in %s", data.testbed_dir)
    return write_testbed(data.testbed_dir, **data.testbed.to_dict())


def testbed_unlabeled_paths(data: ml_collections.ConfigDict):
    """Generate (or reuse) the testbed's unlabelled split under ``data.testbed_dir / "unlabeled"``
    (``data.num_unlabeled`` images, the testbed's seed and image size); returns its ``UnlabeledPaths``.
    Call it after ``testbed_paths`` (the testbed refuses a non-empty folder without its manifest)."""
    testbed = data.testbed
    return write_unlabeled(
        Path(data.testbed_dir) / "unlabeled",
        num_images=int(data.get("num_unlabeled", 400)),
        seed=int(testbed.get("seed", 0)),
        image_size=tuple(testbed.get("image_size", DEFAULT_IMAGE_SIZE)),
    )


def resolved_paths(data: ml_collections.ConfigDict, needs: Iterable[str] = ("val",)) -> dict[str, Any]:
    """The dataset paths to read for the sources ``needs``: the configured files (checked), or the
    testbed's. With ``data.tuning_images`` > 0, 'syrip_real' reads the real training images less a
    held-out tuning split, and 'val' is that split (``data/tuning.py``). 'unlabeled' adds
    ``unlabeled_images`` / ``unlabeled_boxes`` / ``unlabeled_image_list`` (None when unset) and
    ``unlabeled_min_score``; with 'testbed' it generates the testbed's unlabelled split."""
    tuning = int(data.get("tuning_images", 0) or 0)
    needs = list(dict.fromkeys("syrip_real" if n == "val" and tuning else n for n in needs))
    check_paths(data, needs)
    extra = {}
    if "humans" in needs:
        extra["humans"] = corpus_paths(data).train
    if data_source(data) == "files":
        paths = {f: data.get(f) for f in _PATH_FIELDS} | {"mini_rgbd_sequences": data.mini_rgbd_sequences} | extra
    else:
        p = testbed_paths(data)
        paths = extra | {
            "syrip_syn_ann": p.train_syn_json,
            "syrip_syn_images": p.train_syn_images,
            "syrip_real_ann": p.train_real_json,
            "syrip_real_images": p.train_real_images,
            "mini_rgbd_root": p.mini_rgbd,
            "mini_rgbd_sequences": [s.name for s in p.sequences],
            "val_ann": p.val_json,
            "val_images": p.val_images,
            "skeletons": p.skeletons,
        }
        if "unlabeled" in needs:  # after the testbed: its folder holds the unlabelled split
            u = testbed_unlabeled_paths(data)
            paths |= {"unlabeled_images": u.images, "unlabeled_boxes": u.boxes, "unlabeled_image_list": None}
    if "unlabeled" in needs:
        paths["unlabeled_min_score"] = float(data.get("unlabeled_min_score", 0.0) or 0.0)
    if tuning:
        train, tune = carve(paths["syrip_real_ann"], tuning, int(data.get("tuning_seed", 0)), data.tuning_dir)
        log.info(
            "tuning split: %d of the real training images (%s) held out as the validation split",
            tuning,
            paths["syrip_real_ann"],
        )
        paths |= {"syrip_real_ann": train, "val_ann": tune, "val_images": paths["syrip_real_images"]}
    return paths


def eval_split_name(data: ml_collections.ConfigDict) -> str:
    """What the 'val' source scores: 'val', or 'tuning' when a tuning split is held out."""
    return "tuning" if int(data.get("tuning_images", 0) or 0) > 0 else "val"


def corpus_paths(data: ml_collections.ConfigDict) -> HumansPaths:
    """Write (or reuse) the human corpus that ``data.humans`` describes under ``data.humans_dir``."""
    h = data.humans
    views = Views(**{f.name: h[f.name] for f in dataclasses.fields(Views) if f.name in h})
    return write_humans(
        data.humans_dir,
        num_train=h.num_train,
        num_val=h.num_val,
        image_size=tuple(h.image_size),
        seed=h.seed,
        views=views,
    )


def pretrain_source(data: ml_collections.ConfigDict) -> HumansSource:
    """The images of the human corpus (records with ``image`` and the person ``bbox``) for MAE pretraining."""
    return HumansSource(corpus_paths(data).train)


def build_source(name: str, paths: dict[str, Any], skip_bad_records: bool = False):
    """One named source from resolved paths: 'humans' (the corpus) or any of ``data.catalog``'s."""
    if name == "humans":
        return HumansSource(paths["humans"])
    return catalog.build_source(name, paths, skip_bad_records)


def sample_config(config: ml_collections.ConfigDict) -> SampleConfig:
    """Sample settings from ``config.model.image_size``, ``config.data.heatmap_sigma`` and ``config.data.aug``."""
    aug = config.data.aug
    geo_fields = {f.name for f in dataclasses.fields(T.GeometryAugParams)}
    tex_fields = {f.name for f in dataclasses.fields(T.TextureAugParams)}
    unknown = set(aug.keys()) - geo_fields - tex_fields
    if unknown:
        raise ValueError(f"unknown config.data.aug fields {sorted(unknown)}")
    geo = T.GeometryAugParams(**{k: _tuple(v) for k, v in aug.items() if k in geo_fields})
    tex = T.TextureAugParams(**{k: _tuple(v) for k, v in aug.items() if k in tex_fields})
    return SampleConfig(
        input_size=tuple(config.model.image_size),
        heatmap_sigma=config.data.heatmap_sigma,
        num_keypoints=config.model.num_keypoints,
        geometry=geo,
        texture=tex,
        focal_factor=config.data.get("focal_factor", 1.0),
    )


def _tuple(v):
    return tuple(v) if isinstance(v, list) else v


def build_train_mix(
    config: ml_collections.ConfigDict, also_needs: Iterable[str] = ()
) -> tuple[list[MixEntry], dict[str, Any]]:
    """The training mix (source + exact global count per step) of ``config`` and the resolved paths
    (checked for the mix's sources and ``also_needs``, e.g. 'val')."""
    counts = mix_counts(dict(config.data.mix), config.batch_size)
    unknown = set(counts) - set(SOURCE_DOMAINS)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)} in config.data.mix; known: {sorted(SOURCE_DOMAINS)}")
    paths = resolved_paths(config.data, [*counts, *also_needs])
    keep = int(config.data.get("num_labeled", 0) or 0)
    mix = []
    for name, n in counts.items():
        source = build_source(name, paths, config.data.skip_bad_records)
        if keep:
            source = Subset(source, keep, int(config.data.get("labeled_seed", 0)))
        mix.append(MixEntry(name, source, n))
    for e in mix:
        log.info(
            "source %-10s %6d records, %d per global batch (%s)", e.name, len(e.source), e.count, SOURCE_DOMAINS[e.name]
        )
    return mix, paths


def run_data(config: ml_collections.ConfigDict, mode: str = "train") -> RunData:
    """What a fine-tuning run reads (``training.trainer.RunData``): the sample settings, the resolved
    paths, the evaluation source and, when training, the mix."""
    if mode == "train":
        mix, paths = build_train_mix(config, ["val"])
    else:
        mix, paths = None, resolved_paths(config.data)
    val = build_source("val", paths, config.data.skip_bad_records)
    return RunData(sample=sample_config(config), paths=paths, val=val, mix=mix)
