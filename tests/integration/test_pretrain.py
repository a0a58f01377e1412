"""MAE pretraining: patchify / masking / loss, the image-folder source and crop, and a tiny run
(the loss falls, the export converts with convert_weights.torch_to_flax, a restart resumes)."""

from __future__ import annotations

import json
import math

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx, traverse_util
from PIL import Image

from hyper_sapiens_jax.config import load_config_file
from hyper_sapiens_jax.data.sources import DataError
from hyper_sapiens_jax.data.unlabeled import CropParams, ImageFolderSource, mae_sample
from hyper_sapiens_jax.jobs import pretrain
from hyper_sapiens_jax.models.arch import ModelConfig
from hyper_sapiens_jax.models.mae import MAE, mae_loss, num_masked, patchify, random_masking, unpatchify
from hyper_sapiens_jax.models.pos_embed import resize_pos_embed
from hyper_sapiens_jax.models.weights import load_weights
from tests.helpers import REPO


# =============================================================================================
# (a) patchify, masking, loss
# =============================================================================================
def test_patchify_matches_a_loop_and_inverts():
    x = np.random.default_rng(0).normal(size=(2, 32, 48, 3)).astype(np.float32)
    out = np.asarray(patchify(jnp.asarray(x), 16))
    assert out.shape == (2, 6, 16 * 16 * 3)
    for r in range(2):
        for c in range(3):
            patch = x[:, 16 * r : 16 * r + 16, 16 * c : 16 * c + 16].reshape(2, -1)
            np.testing.assert_array_equal(out[:, r * 3 + c], patch)
    np.testing.assert_array_equal(np.asarray(unpatchify(jnp.asarray(out), (2, 3), 16)), x)


@pytest.mark.parametrize("n", [16, 12, 49, 4096])
def test_random_masking_counts_and_consistency(n):
    keep, mask = random_masking(jax.random.key(1), 3, n, 0.75)
    keep, mask = np.asarray(keep), np.asarray(mask)
    n_masked = int(math.floor(0.75 * n + 0.5))
    assert num_masked(n, 0.75) == n_masked
    assert keep.shape == (3, n - n_masked) and mask.shape == (3, n)
    np.testing.assert_array_equal(mask.sum(1), n_masked)
    for b in range(3):
        assert np.all(np.diff(keep[b]) > 0)  # sorted, distinct
        assert set(np.flatnonzero(mask[b] == 0)) == set(keep[b])  # visible = kept
    assert not np.array_equal(mask[0], mask[1])  # each sample its own mask
    _, other = random_masking(jax.random.key(2), 3, n, 0.75)
    assert not np.array_equal(mask, np.asarray(other))


def test_loss_counts_masked_patches_only_and_norm_pix_by_hand():
    rng = np.random.default_rng(0)
    pred = rng.normal(size=(2, 8, 12)).astype(np.float32)
    target = rng.normal(2.0, 3.0, size=(2, 8, 12)).astype(np.float32)
    mask = np.zeros((2, 8), np.float32)
    mask[0, [1, 4, 5]] = 1
    mask[1, [0, 7]] = 1
    # By hand: each target patch normalised by its own mean and unbiased variance (torch .var()).
    t = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    want = ((pred - t) ** 2).mean(-1)[mask > 0].mean()
    got = float(mae_loss(pred, target, mask))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    raw = ((pred - target) ** 2).mean(-1)[mask > 0].mean()
    np.testing.assert_allclose(float(mae_loss(pred, target, mask, norm_pix=False)), raw, rtol=1e-5)
    assert abs(raw - want) > 0.1  # norm_pix changes the loss
    changed = pred.copy()
    changed[0, 2] += 10.0  # a visible patch
    changed[1, 3] -= 5.0
    assert float(mae_loss(changed, target, mask)) == got
    changed[0, 4] += 1.0  # a masked patch
    assert float(mae_loss(changed, target, mask)) != got


def test_encoder_never_sees_masked_patches():
    """With patch_padding 0 the visible tokens depend only on visible pixels: editing the pixels of
    masked patches leaves every prediction unchanged (same key, same mask)."""
    cfg = ModelConfig(arch="tiny", image_size=(32, 32), heads=(), patch_padding=0)
    model = nnx.jit(lambda: MAE(cfg, decoder_dim=16, decoder_depth=1, decoder_heads=2, rngs=nnx.Rngs(0)))()
    forward = nnx.jit(lambda m, x, k: m(x, k))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 32, 32, 3)), jnp.float32)
    key = jax.random.key(3)
    pred, mask = forward(model, x, key)
    assert pred.shape == (3, 4, 768) and pred.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(mask).sum(1), 3)
    pixel_mask = jnp.asarray(unpatchify(jnp.repeat(mask[..., None], 768, -1), (2, 2)))
    np.testing.assert_array_equal(np.asarray(forward(model, x + 5.0 * pixel_mask, key)[0]), np.asarray(pred))
    moved = np.asarray(forward(model, x + 5.0 * (1.0 - pixel_mask), key)[0])
    assert not np.allclose(moved, np.asarray(pred))


# =============================================================================================
# The source and the crop
# =============================================================================================
def _write_images(folder, n=16, seed=0):
    """``n`` small images with structure: a flat background and coloured discs and rectangles."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = int(rng.integers(72, 112)), int(rng.integers(72, 112))
        im = np.full((h, w, 3), rng.integers(0, 255, 3), np.uint8)
        for _ in range(4):
            color = tuple(int(c) for c in rng.integers(0, 255, 3))
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            if rng.uniform() < 0.5:
                cv2.circle(im, (x, y), int(rng.integers(8, 30)), color, -1)
            else:
                cv2.rectangle(im, (x, y), (x + int(rng.integers(10, 40)), y + int(rng.integers(10, 40))), color, -1)
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(sub / f"f{i:02d}.{'jpg' if i % 4 == 0 else 'png'}")
    return folder


def test_image_folder_source(tmp_path):
    folder = _write_images(tmp_path / "imgs", n=5)
    (folder / "notes.txt").write_text("not an image")
    src = ImageFolderSource(folder)
    assert len(src) == 5
    assert [p.relative_to(folder).as_posix() for p in src.paths] == [
        "a/f01.png",
        "a/f03.png",
        "b/f00.jpg",
        "b/f02.png",
        "b/f04.jpg",
    ]
    rec = src[2]
    assert rec["image"].dtype == np.uint8 and rec["image"].ndim == 3 and rec["image"].shape[-1] == 3
    with pytest.raises(DataError, match="missing_folder"):
        ImageFolderSource(tmp_path / "missing_folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        ImageFolderSource(tmp_path / "empty")
    (folder / "b" / "f02.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="f02.png"):
        src[3]


def test_mae_crop_whole_image_and_person_box():
    rng = np.random.default_rng(0)
    image = np.zeros((100, 200, 3), np.uint8)
    image[20:80, 120:160] = 255  # the "person"
    p = CropParams(32, bbox_padding=1.0, bbox_scale_range=(1.0, 1.0), ratio_range=(1.0, 1.0), flip_prob=0.0)
    out = mae_sample({"image": image, "bbox": np.array([120, 20, 40, 60], np.float32)}, rng, p)["image"]
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    white = out[..., 0] > 0  # normalised: white > 0 > black
    # The crop spans x 110..170: the box (x 120..160) lands on columns 5.3..26.7, every row.
    assert white[:, 7:25].all() and not white[:, :4].any() and not white[:, 28:].any()
    whole = CropParams(32, scale_range=(1.0, 1.0), ratio_range=(2.0, 2.0), flip_prob=1.0)
    out = mae_sample({"image": image}, rng, whole)["image"]  # the full image, flipped: person on the left
    assert (out[8:24, 7:12, 0] > 0).all() and not (out[:, 16:, 0] > 0).any()


# =============================================================================================
# (b)-(e) the job
# =============================================================================================
def _config(images, **changes):
    config = load_config_file(REPO / "configs/pretrain.py", "tiny")
    config.model.image_size = (64, 64)
    config.data.source, config.data.images = "files", str(images)
    config.num_steps, config.log_every, config.checkpoint.every = 80, 10, 30
    for k, v in changes.items():
        setattr(config, k, v)
    return config


def _log(workdir):
    return [json.loads(line) for line in (workdir / pretrain.TRAIN_LOG_FILE).read_text().splitlines()]


class _StopAtStep60(pretrain.StopFlag):
    """A SIGTERM that arrives just before step 60 (``agreed`` is asked at every log step: 10, 20, ...)."""

    calls = 0

    def agreed(self) -> bool:
        type(self).calls += 1
        return type(self).calls == 6


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An 80-step tiny run stopped (as on SIGTERM) after step 60, then restarted with the same command."""
    root = tmp_path_factory.mktemp("pretrain")
    images = _write_images(root / "imgs")
    workdir = root / "run"
    # The restart compiles the very same step: a hit in the run's compilation cache (conftest.py).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pretrain, "StopFlag", _StopAtStep60)
        assert pretrain.run(_config(images), workdir) == 0
    interrupted = {"log": _log(workdir), "exported": (workdir / pretrain.EXPORT_FILE).exists()}
    assert pretrain.run(_config(images), workdir) == 0  # (d) the restart
    return {"workdir": workdir, "interrupted": interrupted, "log": _log(workdir)}


def _checkpoint_params(workdir, step):
    """The saved MAE parameters (trainable + fixed) at ``step``, straight from the Orbax checkpoint."""
    with ocp.CheckpointManager(workdir / "checkpoints") as mngr:
        out = mngr.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(), frozen=ocp.args.StandardRestore())
        )
    flat = {**traverse_util.flatten_dict(out["frozen"]), **traverse_util.flatten_dict(out["params"])}
    return {tuple(int(k) if str(k).isdigit() else k for k in p): np.asarray(v) for p, v in flat.items()}


def test_tiny_run_loss_falls(tiny_run):
    rows = tiny_run["interrupted"]["log"]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert np.isfinite([r["loss"] for r in rows]).all()
    assert last < 0.8 * first, [round(r["loss"], 4) for r in rows]
    assert all(r["step_s"] > 0 for r in rows)


def test_restart_resumes_from_the_checkpoint(tiny_run):
    assert not tiny_run["interrupted"]["exported"]  # stopped early: no export yet
    rows = tiny_run["log"]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60, 70, 80]  # not a second run from step 0
    # Continued training: the resumed loss stays at the trained level, far below a fresh start's.
    assert rows[6]["loss"] < 0.85 * rows[0]["loss"], [round(r["loss"], 4) for r in rows]
    with ocp.CheckpointManager(tiny_run["workdir"] / "checkpoints") as mngr:
        assert mngr.all_steps() == [60, 80]
    assert (tiny_run["workdir"] / pretrain.EXPORT_FILE).is_file()


def test_export_converts_and_matches_the_trained_backbone(tiny_run, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    from convert_weights import torch_to_flax

    workdir = tiny_run["workdir"]
    trained = _checkpoint_params(workdir, 80)
    path = workdir / pretrain.EXPORT_FILE
    sd = load_file(str(path))
    assert not any(k.startswith("backbone.") for k in sd)
    assert sd["cls_token"].shape == (1, 1, 64) and sd["pos_embed"].shape == (1, 1 + 16, 64)
    np.testing.assert_array_equal(sd["pos_embed"][:, :1], trained[("cls_pos",)])
    np.testing.assert_array_equal(sd["pos_embed"][:, 1:], trained[("backbone", "pos_embed")])
    np.testing.assert_array_equal(sd["cls_token"], trained[("cls_token",)])
    np.testing.assert_array_equal(
        sd["layers.1.attn.qkv.weight"], trained[("backbone", "layers", 1, "attn", "qkv", "kernel")].T
    )  # torch (out, in)
    with safe_open(str(path), framework="np") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items()}
    assert meta["arch"] == "tiny" and meta["step"] == 80 and meta["image_size"] == [64, 64]

    out = tmp_path / "converted"
    assert torch_to_flax.main(["--pretrain", str(path), "--image-size", "64,48", "--out", str(out)]) == 0
    config, params = load_weights(out)
    assert config.arch == "tiny" and config.image_size == (64, 48) and config.patch_padding == 2
    blocks = [p for p in params if p[:2] == ("backbone", "layers")]
    assert len(blocks) == 4 * 12
    for p in [*blocks, ("backbone", "patch_embed", "kernel"), ("backbone", "norm", "scale")]:
        np.testing.assert_array_equal(params[p], trained[p], err_msg=str(p))
    np.testing.assert_allclose(
        params[("backbone", "pos_embed")],
        resize_pos_embed(trained[("backbone", "pos_embed")], (4, 3), (4, 4)),
        atol=1e-6,
    )
    # The workdir itself is a weights directory (init_from of the fine-tuning stages).
    wcfg, wparams = load_weights(workdir)
    assert wcfg.heads == () and wcfg.image_size == (64, 64)
    np.testing.assert_array_equal(
        wparams[("backbone", "layers", 3, "ffn", "fc2", "kernel")],
        trained[("backbone", "layers", 3, "ffn", "fc2", "kernel")],
    )

    # Continued (domain-adaptive) pretraining starts from the export: backbone and cls token as
    # trained, the decoder fresh; from the converted 64x48 directory the pos_embed is resized back.
    config = _config(workdir.parent / "imgs", init_from=str(path))
    mcfg = pretrain.model_config(config)
    init = pretrain.initial_params(config, mcfg)
    for p in [*blocks, ("cls_token",), ("cls_pos",), ("backbone", "pos_embed")]:
        np.testing.assert_array_equal(init[p], trained[p], err_msg=str(p))
    assert not np.array_equal(init[("decoder", "pred", "kernel")], trained[("decoder", "pred", "kernel")])
    shapes = {p: v.shape for p, v in init.items()}
    from_dir = pretrain._backbone_from_dir(out, mcfg, shapes)
    np.testing.assert_array_equal(
        from_dir[("backbone", "layers", 0, "ln1", "scale")], trained[("backbone", "layers", 0, "ln1", "scale")]
    )
    np.testing.assert_allclose(
        from_dir[("backbone", "pos_embed")],
        resize_pos_embed(params[("backbone", "pos_embed")], (4, 4), (4, 3)),
        atol=1e-6,
    )


def test_files_source_without_images_names_the_field(tmp_path):
    config = _config("")
    with pytest.raises(pretrain.PretrainError, match=r"config\.data\.images"):
        pretrain.run(config, tmp_path / "w")
