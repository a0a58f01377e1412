"""TFDS builders (ArrayRecord) for SyRIP-layout COCO sets and MINI-RGBD, read back through Grain.

  Syrip / MiniRgbd          ``GeneratorBasedBuilder``s ("syrip", "mini_rgbd") reading a manual dir
  build_dataset(...)        build one into ``data_dir`` as ArrayRecord, return the builder
  TfdsRecordSource(...)     Grain random-access source over a built split; ``[i]`` returns exactly
                            the record ``CocoKeypointSource`` / ``MiniRgbdSource`` return for it
  python -m hyper_sapiens_jax.data.tfds_builders --dataset syrip --manual-dir D --data-dir O

Images are stored as *encoded bytes* (a ``Tensor(shape=(), dtype=np.object_)`` feature, not
``tfds.features.Image``, which needs TensorFlow to decode), so TFDS builds and reads ArrayRecord
without TensorFlow. Building parses with the file sources (same validation, same errors); reading
runs the file sources' own ``load`` on the stored bytes (in-memory files), so the record logic
(decode, MINI-RGBD depth in metres, normals, bbox) exists once. Shuffling is disabled at build time
and examples are keyed by the direct reader's record index, so TFDS index ``i`` is the file source's record ``i``: Grain
then shuffles both identically for the same seed.

On disk: ``data_dir/<name>/<config>/<version>/{dataset_info.json, features.json,
<name>-<split>.array_record-0000i-of-0000n}``.

Nothing in the package imports this module at import time (it pulls in TFDS).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import sys
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hyper_sapiens_jax.data import geometry, sources
from hyper_sapiens_jax.data.keypoints import NUM_COCO_KEYPOINTS
from hyper_sapiens_jax.data.sources import (
    CocoKeypointSource,
    DataError,
    MiniRgbdSource,
    Record,
    _Skipper,
    first_loadable,
    parse_sequences,
    read_gray,
    read_image,
    read_joints_2ddep,
)

VERSION = tfds.core.Version("1.1.0")
RELEASE_NOTES = {  # an older build is read as it is (mini_rgbd 1.0.0: normals computed at every read)
    "1.1.0": "mini_rgbd stores each frame's normals (computed from its depth once, at build time).",
    "1.0.0": "Initial release.",
}
_BYTES = {"shape": (), "dtype": np.object_}  # encoded file bytes: no TF needed to write or read


# ---------------------------------------------------------------------------------------------
# Split specs and configs
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CocoSplit:
    """One COCO keypoint split, paths relative to the manual dir.

    ``domain`` is CocoKeypointSource's: used only for images without an ``is_synthetic`` field.
    """

    ann_file: str
    image_dir: str
    domain: str = "real"


SYRIP_SPLITS: dict[str, CocoSplit] = {
    "train_syn": CocoSplit("annotations/person_keypoints_train_syn.json", "images/train_syn", "synthetic"),
    "train_real": CocoSplit("annotations/person_keypoints_train_real.json", "images/train_real", "real"),
    "validate": CocoSplit("annotations/person_keypoints_validate.json", "images/validate", "real"),
}
MINI_RGBD_SPLITS: dict[str, str] = {"train": "01-08", "val": "09-10", "test": "11-12"}


@dataclasses.dataclass(eq=False)
class SyripConfig(tfds.core.BuilderConfig):
    """Split name -> ``CocoSplit`` (annotation file, image folder, domain) under the manual dir."""

    splits: Mapping[str, CocoSplit] = dataclasses.field(default_factory=lambda: dict(SYRIP_SPLITS))


@dataclasses.dataclass(eq=False)
class MiniRgbdConfig(tfds.core.BuilderConfig):
    """Split name -> sequence spec ('01-08', '09,10', or a list) under the manual dir."""

    splits: Mapping[str, Any] = dataclasses.field(default_factory=lambda: dict(MINI_RGBD_SPLITS))


def _spec_json(splits: Mapping[str, Any]) -> str:
    return json.dumps(
        {k: dataclasses.asdict(v) if isinstance(v, CocoSplit) else v for k, v in sorted(splits.items())}, sort_keys=True
    )


def make_config(kind: str, splits: Mapping[str, Any] | None = None, name: str | None = None):
    """A builder config for ``kind`` ('syrip' | 'mini_rgbd'); None splits -> the default config.

    A custom split spec gets its own config name (``custom_<hash of the spec>`` unless given), so
    it never overwrites the default build in the same data_dir.
    """
    cls = {"syrip": Syrip, "mini_rgbd": MiniRgbd}[_check_kind(kind)]
    if splits is None and name in (None, "default"):
        return cls.BUILDER_CONFIGS[0]
    if splits is None:
        splits = cls.BUILDER_CONFIGS[0].splits
    if kind == "syrip":
        splits = {k: v if isinstance(v, CocoSplit) else CocoSplit(*v) for k, v in splits.items()}
    if not splits:
        raise ValueError(f"{kind}: empty split spec")
    name = name or "custom_" + hashlib.sha1(_spec_json(splits).encode()).hexdigest()[:8]
    config_cls = SyripConfig if kind == "syrip" else MiniRgbdConfig
    return config_cls(name=name, version=VERSION, splits=dict(splits), description=f"splits {_spec_json(splits)}")


def _check_kind(kind: str) -> str:
    if kind not in ("syrip", "mini_rgbd"):
        raise ValueError(f"kind must be 'syrip' or 'mini_rgbd', got {kind!r}")
    return kind


def _manual_root(dl_manager) -> Path:
    """The manual dir, checked here so the error names it (TFDS's own check is an AssertionError)."""
    root = Path(dl_manager._manual_dir or "")  # pylint: disable=protected-access
    if not root.is_dir():
        raise DataError(root, "manual directory does not exist (pass --manual-dir / DownloadConfig(manual_dir=...))")
    return root


def _read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise DataError(path, f"unreadable file ({e})") from None


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------
class _LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder of local files: no downloads, no checksums, no package resources."""

    # TFDS finds the checksum file next to ``code_path``, which it resolves through the
    # ``importlib_resources`` backport: TFDS 4.9.10 declares that only for Python < 3.9
    # (tensorflow/datasets#11212), and the resource lookup also breaks on namespace-package /
    # editable installs. Nothing here is downloaded, so the file path is all it needs.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return epath.Path(__file__)


class Syrip(_LocalBuilder):
    """SyRIP (or any COCO keypoint set in the same layout): one example per person annotation.

    Manual dir: ``annotations/person_keypoints_<split>.json`` + ``images/<split>/...`` (the split
    mapping is ``config.splits``). Parsing, validation and bad-input rules are CocoKeypointSource's.
    Features: image (encoded bytes), file_name (bytes, relative to the manual dir), keypoints
    (17, 3) f32 [x, y, v], bbox (4,) f32 xywh, image_id, ann_id int64, is_real bool.
    """

    VERSION = VERSION
    RELEASE_NOTES = RELEASE_NOTES
    BUILDER_CONFIGS = [SyripConfig(name="default", version=VERSION, description="train_syn, train_real, validate")]  # noqa: RUF012 (the TFDS API)
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "A folder with annotations/person_keypoints_<split>.json and images/<split>/ "
        "(the SyRIP release layout; `write_testbed` writes it under <out>/syrip)."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="SyRIP infant keypoints (COCO-17), images as encoded bytes.",
            homepage="https://github.com/ostadabbas/Infant-Pose-Estimation",
            disable_shuffling=True,  # TFDS index i == CocoKeypointSource record i
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(**_BYTES),
                    "file_name": tfds.features.Tensor(**_BYTES),
                    "keypoints": tfds.features.Tensor(shape=(NUM_COCO_KEYPOINTS, 3), dtype=np.float32),
                    "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                    "image_id": np.int64,
                    "ann_id": np.int64,
                    "is_real": np.bool_,
                }
            ),
        )

    def _split_generators(self, dl_manager):
        root = _manual_root(dl_manager)
        return {name: self._generate_examples(root, split) for name, split in self.builder_config.splits.items()}

    def _generate_examples(self, root: Path, split: CocoSplit):
        src = CocoKeypointSource(root / split.ann_file, root / split.image_dir, domain=split.domain)
        for index, rec in enumerate(src.records):
            yield (
                index,
                {
                    "image": _read_bytes(rec["path"]),
                    "file_name": str(Path(rec["path"]).relative_to(root)).encode(),
                    "keypoints": rec["keypoints"],
                    "bbox": rec["bbox"],
                    "image_id": rec["image_id"],
                    "ann_id": rec["ann_id"],
                    "is_real": rec["is_real"],
                },
            )


class MiniRgbd(_LocalBuilder):
    """MINI-RGBD frames: one example per frame of the split's sequences (``config.splits``).

    Features: rgb, depth (16-bit PNG, millimetres, as-is), mask (PNG) encoded bytes; file_name
    (rgb path relative to the manual dir, bytes); joints_2Ddep (25, 3) f64 [x, y, depth_mm] by joint
    id — float64, the parsed text exactly, so keypoints/bbox are bit-equal to MiniRgbdSource's;
    image_id int64 (sequence * 100000 + frame). Since 1.1.0 also the frame's normals, computed once
    here as MiniRgbdSource computes them at every read (its costliest part): normal_window (4,)
    int64 [y0, y1, x0, x1], the box holding every non-zero normal, normal the zlib-compressed
    float32 (y1 - y0, x1 - x0, 3) normals in it, and normal_intrinsics, the float64 bytes of the
    (fx, fy, cx, cy) at 640x480 they were computed with (a reader asking for others computes its own).
    """

    VERSION = VERSION
    RELEASE_NOTES = RELEASE_NOTES
    BUILDER_CONFIGS = [  # noqa: RUF012 (the TFDS API)
        MiniRgbdConfig(name="default", version=VERSION, description="train 01-08, val 09-10, test 11-12")
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "The MINI-RGBD root: sequence folders 01..12 with rgb/, depth/, fg_mask/, joints_2Ddep/."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="MINI-RGBD infant RGB-D frames, images as encoded PNG bytes.",
            homepage="https://www.iosb.fraunhofer.de/en/competences/image-exploitation/object-recognition/"
            "sensor-networks/motion-analysis.html",
            disable_shuffling=True,  # TFDS index i == MiniRgbdSource record i
            features=tfds.features.FeaturesDict(
                {
                    "rgb": tfds.features.Tensor(**_BYTES),
                    "depth": tfds.features.Tensor(**_BYTES),
                    "mask": tfds.features.Tensor(**_BYTES),
                    "file_name": tfds.features.Tensor(**_BYTES),
                    "joints_2Ddep": tfds.features.Tensor(shape=(25, 3), dtype=np.float64),
                    "image_id": np.int64,
                    "normal": tfds.features.Tensor(**_BYTES),
                    "normal_window": tfds.features.Tensor(shape=(4,), dtype=np.int64),
                    "normal_intrinsics": tfds.features.Tensor(**_BYTES),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        root = _manual_root(dl_manager)
        return {name: self._generate_examples(root, seqs) for name, seqs in self.builder_config.splits.items()}

    def _generate_examples(self, root: Path, sequences):
        src = MiniRgbdSource(root, parse_sequences(sequences))
        for index, rec in enumerate(src.records):
            yield (
                index,
                {
                    "rgb": _read_bytes(rec["rgb"]),
                    "depth": _read_bytes(rec["depth"]),
                    "mask": _read_bytes(rec["mask"]),
                    "file_name": str(Path(rec["rgb"]).relative_to(root)).encode(),
                    "joints_2Ddep": read_joints_2ddep(rec["joints"]),
                    "image_id": rec["image_id"],
                    **self._normals(src, rec),
                },
            )

    @staticmethod
    def _normals(src: MiniRgbdSource, rec: dict) -> dict[str, Any]:
        """The frame's stored normals; none for a frame that does not load (its bytes are stored
        as they are, and the read fails or skips it as the file reader would)."""
        try:
            return pack_normals(src.load(rec)["normal"], src.intrinsics)
        except DataError:
            return {"normal": b"", "normal_window": np.zeros(4, np.int64), "normal_intrinsics": b""}


def pack_normals(normal: np.ndarray, intrinsics) -> dict[str, Any]:
    """A frame's (H, W, 3) float32 normals as the mini_rgbd features: the box around the non-zero
    ones and the zlib-compressed normals in it (the infant covers a small part of the frame)."""
    rows, cols = np.nonzero(normal.any(-1).any(1))[0], np.nonzero(normal.any(-1).any(0))[0]
    y0, y1, x0, x1 = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) if rows.size else (0, 0, 0, 0)
    window = np.ascontiguousarray(normal[y0:y1, x0:x1], np.float32)
    return {
        "normal": zlib.compress(window.tobytes(), 1),
        "normal_window": np.array([y0, y1, x0, x1], np.int64),
        "normal_intrinsics": np.asarray(intrinsics, np.float64).tobytes(),  # TFDS keeps floats as float32
    }


def unpack_normals(raw: Mapping[str, Any], shape: tuple[int, int], intrinsics, where: str) -> np.ndarray | None:
    """The (H, W, 3) normals a mini_rgbd example stores, or None when it stores none (a 1.0.0 build,
    a frame that did not load at build time) or stored them for other intrinsics than ``intrinsics``."""
    if "normal" not in raw or raw["normal_intrinsics"] != np.asarray(intrinsics, np.float64).tobytes():
        return None
    y0, y1, x0, x1 = (int(v) for v in raw["normal_window"])
    out = np.zeros((*shape, 3), np.float32)
    try:
        window = np.frombuffer(zlib.decompress(raw["normal"]), np.float32)
        out[y0:y1, x0:x1] = window.reshape(y1 - y0, x1 - x0, 3)
    except (zlib.error, ValueError) as e:
        raise DataError(where, f"stored normals are damaged ({e})") from None
    return out


def build_dataset(
    kind: str,
    manual_dir: str | Path,
    data_dir: str | Path,
    *,
    splits: Mapping[str, Any] | None = None,
    config_name: str | None = None,
    overwrite: bool = False,
) -> tfds.core.DatasetBuilder:
    """Build ``kind`` ('syrip' | 'mini_rgbd') from ``manual_dir`` into ``data_dir`` as ArrayRecord.

    ``splits``: {name: CocoSplit | (ann_file, image_dir[, domain])} for syrip, {name: '01-08'} for
    mini_rgbd; None keeps the defaults. An existing complete build is reused unless ``overwrite``.
    """
    manual_dir = Path(manual_dir)
    if not manual_dir.is_dir():
        raise DataError(manual_dir, "manual directory does not exist")
    cls = {"syrip": Syrip, "mini_rgbd": MiniRgbd}[_check_kind(kind)]
    builder = cls(data_dir=str(data_dir), config=make_config(kind, splits, config_name), file_format="array_record")
    mode = tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    if overwrite:
        mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir), download_mode=mode, try_download_gcs=False
        )
    )  # local data only: never ask GCS for a prebuilt copy
    return builder


# ---------------------------------------------------------------------------------------------
# Reading back: records identical to the file sources'
# ---------------------------------------------------------------------------------------------
def coco_record(raw: Mapping[str, Any], where: str) -> Record:
    """A syrip example (as the TFDS data source returns it) -> the record CocoKeypointSource gives."""
    image = read_image(io.BytesIO(raw["image"]), where=f"{where} image")
    return sources.coco_record(image, raw)


def mini_rgbd_record(
    raw: Mapping[str, Any], where: str, intrinsics: tuple[float, float, float, float] = geometry.MINI_RGBD_INTRINSICS
) -> Record:
    """A mini_rgbd example (as the TFDS data source returns it) -> the record MiniRgbdSource gives
    (with the stored normals, when the build holds them for these ``intrinsics``)."""
    image = read_image(io.BytesIO(raw["rgb"]), where=f"{where} rgb")
    return sources.mini_rgbd_record(
        image,
        read_gray(io.BytesIO(raw["depth"]), np.float32, where=f"{where} depth", sixteen_bit=True),
        read_gray(io.BytesIO(raw["mask"]), where=f"{where} mask"),
        np.asarray(raw["joints_2Ddep"], np.float64),
        int(raw["image_id"]),
        intrinsics,
        where=where,
        normal=unpack_normals(raw, image.shape[:2], intrinsics, where),
    )


def _find_version_dir(path: Path, kind: str | None, config: str | None) -> Path:
    """A built dataset's version dir from itself or from a data_dir root (+ kind, config)."""
    if (path / "dataset_info.json").is_file():
        return path
    if kind is None:
        raise DataError(
            path,
            "not a TFDS version dir (no dataset_info.json); pass kind= to look for <kind>/<config>/<version> under it",
        )
    found = sorted((path / kind).glob(f"{config or '*'}/*/dataset_info.json"))
    configs = sorted({p.parent.parent.name for p in found})
    if len(configs) > 1:  # only when config is None: prefer the default build
        found = [p for p in found if p.parent.parent.name == "default"]
        if not found:
            raise DataError(path / kind, f"several configs {configs}; pass config=")
    if not found:
        raise DataError(
            path,
            f"no built '{kind}' dataset (expected {kind}/{config or '<config>'}/"
            "<version>/dataset_info.json; build it with build_dataset)",
        )
    return max(found, key=lambda p: tfds.core.Version(p.parent.name)).parent


class TfdsRecordSource:
    """Grain random-access source over one split of a built syrip / mini_rgbd dataset.

    Args:
      builder_or_dir: a builder (from ``build_dataset``), a version dir
        (``.../<name>/<config>/<version>``), or a data_dir root (then ``kind`` is required).
      split: split name, e.g. 'train_syn' or 'train'.
      kind: 'syrip' | 'mini_rgbd'; inferred from the builder's name when omitted.
      config: config name under a data_dir root (default: the only one, else 'default').
      intrinsics: MINI-RGBD (fx, fy, cx, cy) at 640x480, as MiniRgbdSource's.
      skip_bad_records: as the file readers': a record that fails to decode (a truncated image, a
        bad depth or mask frame) is logged, listed in ``skipped`` and replaced by the next
        loadable one, instead of raising ``DataError`` naming it.
    ``[i]`` is the record CocoKeypointSource / MiniRgbdSource return for their record ``i``.
    Reads need no TensorFlow; the ArrayRecord reader is opened lazily (per Grain worker).
    """

    def __init__(
        self,
        builder_or_dir: Any,
        split: str,
        kind: str | None = None,
        *,
        config: str | None = None,
        intrinsics: tuple[float, float, float, float] = geometry.MINI_RGBD_INTRINSICS,
        skip_bad_records: bool = False,
    ):
        self._skipper = _Skipper(skip_bad_records)
        if hasattr(builder_or_dir, "info") and hasattr(builder_or_dir, "data_dir"):
            self.version_dir = Path(builder_or_dir.data_dir)
        else:
            self.version_dir = _find_version_dir(Path(builder_or_dir), kind, config)
        builder = tfds.builder_from_directory(str(self.version_dir))
        self.kind = _check_kind(kind or builder.name)
        if builder.name != self.kind:
            raise DataError(self.version_dir, f"holds '{builder.name}', not '{self.kind}'")
        if split not in builder.info.splits:
            raise DataError(self.version_dir, f"no split {split!r} (has {sorted(builder.info.splits)})")
        self.split, self.intrinsics = split, tuple(intrinsics)
        self.name = f"{self.kind}/{split}"
        self._len = builder.info.splits[split].num_examples
        self._source = None

    def _data_source(self):
        if self._source is None:
            self._source = tfds.builder_from_directory(str(self.version_dir)).as_data_source(self.split)
        return self._source

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_source": None}  # reopened in each worker process

    def __len__(self) -> int:
        return self._len

    @property
    def dense_targets(self) -> tuple[str, ...]:
        """The dense targets its records carry (``training.batch``): MINI-RGBD's depth and normals."""
        return ("depth", "normal") if self.kind == "mini_rgbd" else ()

    @property
    def skipped(self) -> list[dict[str, str]]:
        """The records skipped so far (``skip_bad_records``), each {'file': where, 'reason': why}."""
        return self._skipper.skipped

    def __getitem__(self, index: int) -> Record:
        index = int(index)
        if not 0 <= index < self._len:
            raise IndexError(f"{self.name}: index {index} out of range [0, {self._len})")
        return first_loadable(index, self._len, self._load, self._skipper, self.name)

    def _load(self, index: int) -> Record:
        raw = self._data_source()[index]
        where = f"{self.version_dir}[{self.split}][{index}] ({raw['file_name'].decode()})"
        if self.kind == "syrip":
            return coco_record(raw, where)
        return mini_rgbd_record(raw, where, self.intrinsics)

    def __repr__(self) -> str:
        return f"TfdsRecordSource({self.name}: {len(self)} records from {self.version_dir})"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def _parse_split(kind: str, text: str) -> tuple[str, Any]:
    """'NAME=ANN_JSON:IMAGE_DIR[:DOMAIN]' (syrip) or 'NAME=01-08' (mini_rgbd)."""
    name, sep, spec = text.partition("=")
    if not sep or not name or not spec:
        raise argparse.ArgumentTypeError(f"--split {text!r}: expected NAME=SPEC")
    if kind == "mini_rgbd":
        return name, spec
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--split {text!r}: expected NAME=ANN_JSON:IMAGE_DIR[:DOMAIN]")
    return name, CocoSplit(*parts)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hyper_sapiens_jax.data.tfds_builders",
        description="Build SyRIP-layout COCO keypoints or MINI-RGBD into TFDS ArrayRecord (no TensorFlow).",
    )
    p.add_argument("--dataset", required=True, choices=("syrip", "mini_rgbd"))
    p.add_argument(
        "--manual-dir",
        required=True,
        help="syrip: folder with annotations/ and images/; mini_rgbd: folder with 01..12/",
    )
    p.add_argument("--data-dir", required=True, help="TFDS data_dir to write <dataset>/<config>/<version>/ in")
    p.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="repeatable; syrip: NAME=ANN_JSON:IMAGE_DIR[:DOMAIN] relative to the manual dir "
        f"(default {sorted(SYRIP_SPLITS)}); mini_rgbd: NAME=SEQUENCES, e.g. train=01-08 "
        f"(default {MINI_RGBD_SPLITS})",
    )
    p.add_argument("--config-name", default=None, help="config name for custom splits (default: custom_<hash>)")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if a complete build exists")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        splits = dict(_parse_split(args.dataset, s) for s in args.split) or None
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    try:
        builder = build_dataset(
            args.dataset,
            args.manual_dir,
            args.data_dir,
            splits=splits,
            config_name=args.config_name,
            overwrite=args.overwrite,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{builder.name}/{builder.builder_config.name} -> {builder.data_dir}")
    for name, info in sorted(builder.info.splits.items()):
        print(f"  {name:12s} {info.num_examples:7d} examples  {len(info.filenames)} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
