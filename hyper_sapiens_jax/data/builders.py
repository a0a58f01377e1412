"""``config.data`` -> data sources, the per-step mix and the sample transform settings.

Where the data comes from is explicit: ``config.data.source`` is

  'testbed'  the synthetic infant testbed, generated once (cached by its parameters) under
             ``config.data.testbed_dir`` and read through the same readers as real data;
  'files'    the dataset paths in ``config.data`` (SyRIP / any COCO keypoint set, MINI-RGBD,
             skeletons). Every path a run needs must be set: a missing one stops the run with an
             error that names the fields, instead of quietly training on synthetic infants.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ml_collections

from hyper_sapiens_jax.data import transforms as T
from hyper_sapiens_jax.data.pipeline import MixEntry, mix_counts
from hyper_sapiens_jax.data.sources import CocoKeypointSource, DataError, MiniRgbdSource
from hyper_sapiens_jax.data.topdown import SampleConfig

log = logging.getLogger(__name__)

DATA_SOURCES = ("testbed", "files")
# Source name -> domain. Domains decide the synthetic:real batch counts.
# 'humans' is the testbed's human corpus (adults and children; testbed/humans.py), on which the
# testbed foundation is fine-tuned; it is generated whatever config.data.source says.
SOURCE_DOMAINS = {"syrip_syn": "synthetic", "mini_rgbd": "synthetic", "syrip_real": "real", "humans": "real"}
# Source name -> the config.data fields it reads ('val' is the evaluation split, 'skeletons' the prior's).
SOURCE_FIELDS = {
    "syrip_syn": ("syrip_syn_ann", "syrip_syn_images"),
    "syrip_real": ("syrip_real_ann", "syrip_real_images"),
    "mini_rgbd": ("mini_rgbd_root",),
    "val": ("val_ann", "val_images"),
    "skeletons": ("skeletons",),
    "humans": (),
}
_PATH_FIELDS = tuple(f for fields in SOURCE_FIELDS.values() for f in fields)


class ConfigError(ValueError):
    """``config.data`` cannot describe the data a run needs; the message names the fields."""


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
    from hyper_sapiens_jax.testbed.writer import write_testbed

    log.info("config.data.source='testbed': the synthetic infant testbed in %s", data.testbed_dir)
    return write_testbed(data.testbed_dir, **data.testbed.to_dict())


def resolved_paths(data: ml_collections.ConfigDict, needs: Iterable[str] = ("val",)) -> dict[str, Any]:
    """The dataset paths to read for the sources ``needs``: the configured files (checked), or the
    testbed's. With ``data.tuning_images`` > 0, 'syrip_real' reads the real training images less a
    held-out tuning split, and 'val' is that split (``data/tuning.py``)."""
    tuning = int(data.get("tuning_images", 0) or 0)
    needs = list(dict.fromkeys("syrip_real" if n == "val" and tuning else n for n in needs))
    check_paths(data, needs)
    extra = {}
    if "humans" in needs:
        from hyper_sapiens_jax.testbed.humans import corpus_paths

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
    if tuning:
        from hyper_sapiens_jax.data.tuning import carve

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


def build_source(name: str, paths: dict[str, Any], skip_bad_records: bool = False):
    """One named source ('syrip_syn', 'syrip_real', 'mini_rgbd', 'humans', 'val') from resolved paths."""
    if name == "humans":
        from hyper_sapiens_jax.testbed.humans import HumansSource

        return HumansSource(paths["humans"])
    if name == "mini_rgbd":
        if not paths.get("mini_rgbd_root"):
            raise DataError("config.data.mini_rgbd_root is not set but the mix uses 'mini_rgbd'")
        return MiniRgbdSource(paths["mini_rgbd_root"], paths["mini_rgbd_sequences"], skip_bad_records=skip_bad_records)
    prefix = {"syrip_syn": "syrip_syn", "syrip_real": "syrip_real", "val": "val"}[name]
    ann, images = paths.get(f"{prefix}_ann"), paths.get(f"{prefix}_images")
    if not ann or not images:
        raise DataError(
            f"config.data.{prefix}_ann and config.data.{prefix}_images must both be set for the '{name}' source"
        )
    domain = "synthetic" if name == "syrip_syn" else "real"
    return CocoKeypointSource(ann, images, domain=domain, skip_bad_records=skip_bad_records, name=name)


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
    mix = [MixEntry(name, build_source(name, paths, config.data.skip_bad_records), n) for name, n in counts.items()]
    for e in mix:
        log.info(
            "source %-10s %6d records, %d per global batch (%s)", e.name, len(e.source), e.count, SOURCE_DOMAINS[e.name]
        )
    return mix, paths


def skipped_records(sources) -> list[dict[str, str]]:
    """Every record the given sources skipped (with skip_bad_records)."""
    return [s for src in sources for s in getattr(src, "skipped", [])]


def describe_paths(paths: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in paths.items() if isinstance(v, (str, Path))}
