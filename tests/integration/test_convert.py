"""Checkpoint conversion: formats, round trip, pos-embed resize, and refusal of bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convert_weights.flax_to_torch import export, export_meta, export_rules
from convert_weights.layout import LayoutError, to_torch
from convert_weights.torch_io import CheckpointFileError, load_state_dict, save_state_dict
from convert_weights.torch_to_flax import convert
from hyper_sapiens_jax.models.arch import ARCHS, ModelConfig
from hyper_sapiens_jax.models.pos_embed import resize_pos_embed
from hyper_sapiens_jax.models.weights import build_model, load_weights, param_shapes, save_weights
from tests.helpers import REPO, numpy_state_dict, rel_err
from tests.helpers import torch_sapiens as ts

IMAGE_SIZE = (64, 48)


def save_mm(model: torch.nn.Module, path: Path, meta=None) -> Path:
    """Save like mmengine does: {'state_dict', 'meta'} (meta with numpy, as real checkpoints have)."""
    meta = meta if meta is not None else {"dataset_meta": {"sigmas": np.ones(17) * 0.05}, "epoch": 210}
    torch.save({"state_dict": model.state_dict(), "meta": meta}, path)
    return path


@pytest.fixture(scope="module")
def refs():
    return {
        task: ts.make_reference("tiny", task, IMAGE_SIZE, seed=i) for i, task in enumerate(["pose", "depth", "normal"])
    }


@pytest.fixture
def images():
    return np.random.default_rng(7).standard_normal((1, *IMAGE_SIZE, 3)).astype(np.float32)


def test_round_trip_torch_flax_torch_is_bit_exact(refs, tmp_path):
    files = {t: save_mm(m, tmp_path / f"{t}.pth") for t, m in refs.items()}
    config, params, _ = convert(files, IMAGE_SIZE)
    assert config.heads == ("pose", "depth", "normal")
    save_weights(tmp_path / "ckpt", config, params)
    for task, suffix in [("pose", ".pth"), ("depth", ".safetensors"), ("normal", ".pth")]:
        out = tmp_path / f"back_{task}{suffix}"
        export(tmp_path / "ckpt", task, out)
        back, meta = load_state_dict(out)
        original = {k: v for k, v in numpy_state_dict(refs[task]).items()}
        if task != "pose":  # the backbone came from the pose file
            original.update({k: v for k, v in numpy_state_dict(refs["pose"]).items() if k.startswith("backbone.")})
        assert list(back) == [k for k in back if k in original] and set(back) == set(original)
        for k, v in original.items():
            assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k  # bit-exact
        assert meta["task"] == task and meta["arch"] == "tiny" and meta["image_size"] == list(IMAGE_SIZE)
        assert meta["embed_dims"] == 64 and meta["num_layers"] == 4 and meta["num_heads"] == 4
        assert meta["patch_padding"] == 2


def test_patch8_preset_round_trip_is_bit_exact(tmp_path):
    """A patch-8 preset: torch -> Flax -> torch is bit-exact, the arch is read off the patch
    embedding's kernel, and the export records the patch size and loads strict into the reference."""
    refs8 = {t: ts.make_reference("cpu_p8", t, IMAGE_SIZE, seed=20 + i) for i, t in enumerate(["pose", "depth"])}
    files = {t: save_mm(m, tmp_path / f"{t}.pth") for t, m in refs8.items()}
    config, params, _ = convert(files, IMAGE_SIZE)
    assert config.arch == "cpu_p8" and config.patch_size == 8 and config.grid == (8, 6)
    save_weights(tmp_path / "ckpt", config, params)
    for task in ("pose", "depth"):
        export(tmp_path / "ckpt", task, tmp_path / f"back_{task}.pth")
        back, meta = load_state_dict(tmp_path / f"back_{task}.pth")
        original = numpy_state_dict(refs8[task])
        if task == "depth":  # the backbone came from the pose file
            original.update({k: v for k, v in numpy_state_dict(refs8["pose"]).items() if k.startswith("backbone.")})
        assert set(back) == set(original)
        for k, v in original.items():
            assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
        assert meta["patch_size"] == 8 and meta["arch"] == "cpu_p8"
        model = ts.SapiensTorch("cpu_p8", task, IMAGE_SIZE, patch_padding=meta["patch_padding"])
        model.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    # The same width and depth at patch 16 is another preset: its files convert as 'cpu'.
    cpu = save_mm(ts.make_reference("cpu", "pose", IMAGE_SIZE), tmp_path / "cpu.pth")
    assert convert({"pose": cpu}, IMAGE_SIZE)[0].arch == "cpu"


def test_safetensors_bytes_depend_only_on_the_contents(tmp_path):
    """The safetensors library writes its metadata in hash order, which changes between processes;
    ``write_safetensors`` sorts the header, so two processes write the same bytes (the foundation's
    manifest records sha256), and the file reads back as written."""
    script = (
        "import sys, numpy as np\n"
        "from convert_weights.torch_io import save_state_dict\n"
        "sd = {f'w{i}': np.full((2, 3), i, np.float32) for i in range(12)}\n"
        "meta = {f'key{i}': [i, 'v'] for i in range(12)}\n"
        "save_state_dict(sys.argv[1], sd, meta, dtype=np.float16)\n"
    )
    files = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for i, f in enumerate(files):
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": str(i)}
        subprocess.run([sys.executable, "-c", script, str(f)], env=env, check=True)
    assert files[0].read_bytes() == files[1].read_bytes() == files[2].read_bytes()
    sd, meta = load_state_dict(files[0])
    assert meta["key7"] == [7, "v"] and sd["w5"].dtype == np.float32 and np.all(sd["w5"] == 5)
    from safetensors.numpy import load_file

    assert load_file(files[0])["w3"].dtype == np.float16  # a valid file for the safetensors library


def test_export_loads_strict_into_the_torch_model(refs, tmp_path):
    config, params, _ = convert({"depth": save_mm(refs["depth"], tmp_path / "d.pth")}, IMAGE_SIZE)
    save_weights(tmp_path / "ckpt", config, params)
    export(tmp_path / "ckpt", "depth", tmp_path / "out.pth")
    obj = torch.load(tmp_path / "out.pth", weights_only=True)
    model = ts.SapiensTorch("tiny", "depth", IMAGE_SIZE, patch_padding=obj["meta"]["patch_padding"])
    model.load_state_dict(obj["state_dict"], strict=True)
    export(tmp_path / "ckpt", "backbone", tmp_path / "bb.pth")
    ts.SapiensTorch("tiny", "backbone", IMAGE_SIZE).load_state_dict(
        torch.load(tmp_path / "bb.pth", weights_only=True)["state_dict"], strict=True
    )


@pytest.mark.parametrize("arch", list(ARCHS))
def test_export_layout_rebuilds_the_torch_model_of_every_preset(arch):
    """For every preset and task: the model PyTorch builds from the exported ``meta`` has exactly the
    exported keys with the exported shapes (so ``strict=True`` loads), without materialising weights
    (the 2B model is 8 GB): shapes from the abstract Flax model, torch's on the meta device."""
    config = ModelConfig(arch=arch, image_size=(256, 192), heads=("pose", "depth", "normal"), num_keypoints=17)
    flax_shapes = param_shapes(config)
    for task in ("pose", "depth", "normal", "backbone"):
        meta = export_meta(config, task)
        assert (meta["embed_dims"], meta["num_layers"], meta["num_heads"]) == (
            ARCHS[arch].embed_dims,
            ARCHS[arch].num_layers,
            ARCHS[arch].num_heads,
        )
        with torch.device("meta"):
            model = ts.SapiensTorch(
                meta["arch"],
                task,
                tuple(meta["image_size"]),
                patch_padding=meta["patch_padding"],
                num_keypoints=meta.get("num_keypoints", 17),
            )
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        got = {
            r.key: to_torch(r.kind, np.broadcast_to(np.int8(0), flax_shapes[r.path])).shape
            for r in export_rules(config, task)
        }
        assert got == want, f"{arch} {task}: {set(got) ^ set(want)}"


def test_pretrain_format_resizes_pos_embed_like_torch(tmp_path, images):
    """A flat *_clean.pth backbone with cls + 64x64 pos_embed, resized to the 4x3 grid."""
    ref = ts.make_reference("tiny", "backbone", IMAGE_SIZE, seed=9)
    flat = {k.removeprefix("backbone."): v for k, v in ref.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    flat["pos_embed"] = torch.randn(1, 4097, 64, generator=g)
    flat["cls_token"] = torch.randn(1, 1, 64, generator=g)
    path = tmp_path / "sapiens_tiny_epoch_1_clean.pth"
    torch.save(flat, path)
    with torch.no_grad():
        ref.backbone.pos_embed.copy_(ts.resize_pretrain_pos_embed(flat["pos_embed"], (4, 3)))
    config, params, info = convert({"pretrain": path}, IMAGE_SIZE)
    assert info["pos_embed_resized"] == {"from_grid": [64, 64], "cls_tokens": 1, "to_grid": [4, 3]}
    ours = params[("backbone", "pos_embed")]
    assert np.abs(ours - ref.backbone.pos_embed.detach().numpy()).max() <= 1e-5
    feats = build_model(config, params)(images)["features"]
    assert rel_err(np.asarray(feats), ts.run(ref, images)[0]) <= 1e-4


def test_pos_embed_resize_matches_torch_interpolate():
    rng = np.random.default_rng(0)
    for src, dst in [((64, 64), (64, 48)), ((64, 64), (16, 12)), ((64, 48), (40, 30)), ((7, 5), (13, 3))]:
        pos = rng.standard_normal((1, src[0] * src[1], 32)).astype(np.float32)
        t = torch.from_numpy(pos).reshape(1, *src, 32).permute(0, 3, 1, 2)
        expected = torch.nn.functional.interpolate(t, size=dst, mode="bicubic", align_corners=False)
        expected = expected.flatten(2).transpose(1, 2).numpy()
        assert np.abs(resize_pos_embed(pos, dst, src) - expected).max() <= 1e-5, (src, dst)


def test_torchscript_and_torch_export_inputs(refs, tmp_path, images):
    model = refs["pose"]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    traced = torch.jit.trace(model, x)
    torch.jit.save(traced, tmp_path / "sapiens_tiny_coco_torchscript.pt2")
    config, params, _ = convert({"pose": tmp_path / "sapiens_tiny_coco_torchscript.pt2"}, IMAGE_SIZE)
    out = build_model(config, params)(images)
    feats, heat = ts.run(model, images)
    assert rel_err(np.asarray(out["pose"]), heat) <= 1e-4
    # The released bf16 torch.export archives: widened to fp32 exactly.
    bf16 = ts.make_reference("tiny", "pose", IMAGE_SIZE, seed=0).to(torch.bfloat16)
    program = torch.export.export(bf16, (x.to(torch.bfloat16),))
    torch.export.save(program, tmp_path / "sapiens_tiny_coco_bfloat16.pt2")
    _, params16, _ = convert({"pose": tmp_path / "sapiens_tiny_coco_bfloat16.pt2"}, IMAGE_SIZE)
    w = bf16.backbone.layers[0].attn.qkv.weight.detach().float().numpy()
    assert np.array_equal(params16[("backbone", "layers", 0, "attn", "qkv", "kernel")], w.T)


def test_safetensors_input(refs, tmp_path):
    sd = numpy_state_dict(refs["normal"])
    save_state_dict(tmp_path / "n.safetensors", sd, {"task": "normal"})
    config, params, _ = convert({"normal": tmp_path / "n.safetensors"}, IMAGE_SIZE)
    k = ("heads", "normal", "conv_seg", "kernel")
    assert np.array_equal(params[k], sd["decode_head.conv_seg.weight"].transpose(2, 3, 1, 0))


def _corrupt(refs, tmp_path, edit):
    sd = dict(refs["pose"].state_dict())
    edit(sd)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": sd, "meta": {}}, path)
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("backbone.layers.2.attn.qkv.bias"), "missing key 'backbone.layers.2.attn.qkv.bias'"),
        (
            lambda sd: sd.update({"backbone.layers.0.ln2.weight": torch.ones(65)}),
            "key 'backbone.layers.0.ln2.weight' has shape (65,), expected (64,)",
        ),
        (
            lambda sd: sd.update({"head.final_layer.bias": torch.ones(3)}),
            "key 'head.final_layer.bias' has shape (3,), expected (17,)",
        ),
        (
            lambda sd: sd.update({"backbone.layers.0.attn.rel_pos": torch.ones(3)}),
            "unexpected key 'backbone.layers.0.attn.rel_pos'",
        ),
        (lambda sd: sd.update({"module.head.extra": torch.ones(3)}), "unexpected key 'module.head.extra'"),
        (
            lambda sd: sd.update({"head.final_layer.bias": torch.ones(17, dtype=torch.int64)}),
            "key 'head.final_layer.bias' holds int64 values; model weights must be floating point",
        ),
    ],
)
def test_bad_checkpoints_are_refused_naming_the_key(refs, tmp_path, edit, message):
    path = _corrupt(refs, tmp_path, edit)
    with pytest.raises(LayoutError) as e:
        convert({"pose": path}, IMAGE_SIZE)
    assert message in str(e.value) and str(path) in str(e.value)


def test_non_finite_tensors_are_refused_naming_the_key_unless_allowed(refs, tmp_path, capsys):
    """A NaN or inf weight stops the conversion (exit code 1, one line naming the file and the key);
    ``--allow-nonfinite`` converts it as it is."""
    from convert_weights import torch_to_flax

    def poison(sd):
        w = sd["head.final_layer.weight"].clone()
        w.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
        sd["head.final_layer.weight"] = w

    path = _corrupt(refs, tmp_path, poison)
    message = "tensor 'head.final_layer.weight' holds 3 NaN or infinite values"
    with pytest.raises(LayoutError, match=rf"{path}: {message}"):
        convert({"pose": path}, IMAGE_SIZE)
    size = ",".join(map(str, IMAGE_SIZE))
    assert torch_to_flax.main(["--image-size", size, "--pose", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # after the log lines
    assert errors == [f"error: {path}: {message} of 544; pass --allow-nonfinite to convert it anyway"], err
    _, params, _ = convert({"pose": path}, IMAGE_SIZE, allow_nonfinite=True)
    assert sum(int((~np.isfinite(v)).sum()) for v in params.values()) == 3


def test_ddp_prefixed_checkpoints_convert_with_a_log_line(refs, tmp_path, caplog):
    """Every key 'module.'-prefixed (saved through DistributedDataParallel): the prefix is removed,
    said in the log, and the weights are the plain checkpoint's."""
    plain = save_mm(refs["pose"], tmp_path / "plain.pth")
    ddp = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in refs["pose"].state_dict().items()}, "meta": {}}, ddp)
    with caplog.at_level("INFO"):
        _, from_ddp, _ = convert({"pose": ddp}, IMAGE_SIZE)
    _, expected, _ = convert({"pose": plain}, IMAGE_SIZE)
    assert set(from_ddp) == set(expected) and all(np.array_equal(from_ddp[k], expected[k]) for k in expected)
    assert "removing their 'module.' prefix" in caplog.text


def test_damaged_safetensors_are_refused_naming_the_file(refs, tmp_path):
    sd = numpy_state_dict(refs["pose"])
    good = tmp_path / "good.safetensors"
    save_state_dict(good, sd, {"task": "pose"})
    data = good.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "huge header": (2**60).to_bytes(8, "little") + data[8:],
        "malformed header": (16).to_bytes(8, "little") + b"{not json at all" + data[24:],
        "empty": b"",
    }
    for name, blob in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        path.write_bytes(blob)
        with pytest.raises(CheckpointFileError, match=rf"{path}: not a readable safetensors file"):
            load_state_dict(path)


def test_wrong_arch_is_refused(refs, tmp_path):
    path = save_mm(refs["pose"], tmp_path / "pose.pth")
    with pytest.raises(
        LayoutError,
        match=r"checkpoint is tiny .* but --arch sapiens_0.3b was given: "
        r"key 'backbone.patch_embed.projection.weight'",
    ):
        convert({"pose": path}, IMAGE_SIZE, arch="sapiens_0.3b")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(refs, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": refs["pose"].state_dict(), "meta": {"x": _Exploit(marker)}}, path)
    with pytest.raises(CheckpointFileError, match=r"evil.pth: refused to load.*(system|run code)"):
        convert({"pose": path}, IMAGE_SIZE)
    assert not marker.exists()


def test_unreadable_files_are_refused(tmp_path):
    (tmp_path / "trunc.pth").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointFileError, match="trunc.pth"):
        load_state_dict(tmp_path / "trunc.pth")
    with pytest.raises(CheckpointFileError, match="no such file"):
        load_state_dict(tmp_path / "missing.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointFileError, match="empty.pth: not a readable PyTorch checkpoint: the file is empty"):
        load_state_dict(tmp_path / "empty.pth")
    (tmp_path / "text.pth").write_text("these are not weights\n")
    with pytest.raises(CheckpointFileError, match=r"text.pth: .*expected a torch.save checkpoint"):
        load_state_dict(tmp_path / "text.pth")
    torch.save({"state_dict": {"backbone.x": [1, 2]}}, tmp_path / "notensor.pth")
    with pytest.raises(CheckpointFileError, match="entry 'backbone.x' is a list"):
        load_state_dict(tmp_path / "notensor.pth")


def test_backbone_source_rules(refs, tmp_path):
    files = {"depth": save_mm(refs["depth"], tmp_path / "d.pth"), "normal": save_mm(refs["normal"], tmp_path / "n.pth")}
    # Without pose/pretrain, the first file given on the command line provides the backbone.
    cfg, params, info = convert(files, IMAGE_SIZE, order=["normal", "depth"])
    assert info["backbone_from"]["role"] == "normal" and cfg.patch_padding == 2
    pk = ("backbone", "patch_embed", "kernel")
    assert np.array_equal(
        params[pk], refs["normal"].state_dict()["backbone.patch_embed.projection.weight"].numpy().transpose(2, 3, 1, 0)
    )
    cfg, _, info = convert(files, IMAGE_SIZE, order=["depth", "normal"])
    assert info["backbone_from"]["role"] == "depth" and cfg.patch_padding == 0
    files["pose"] = save_mm(refs["pose"], tmp_path / "p.pth")
    _, _, info = convert(files, IMAGE_SIZE, order=["depth", "normal", "pose"])
    assert info["backbone_from"]["role"] == "pose"


def test_saved_weights_restore_exactly(refs, tmp_path):
    config, params, _ = convert({"pose": save_mm(refs["pose"], tmp_path / "p.pth")}, IMAGE_SIZE)
    save_weights(tmp_path / "w", config, params)
    config2, params2 = load_weights(tmp_path / "w")
    assert config2 == config and set(params2) == set(params)
    assert all(np.array_equal(params[k], params2[k]) for k in params)


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )


def test_cli_end_to_end_and_error_exit(tmp_path):
    """The README flow: random Sapiens-format file -> convert -> forward -> export; and a refusal."""
    r = _cli(
        "convert_weights.random_checkpoint",
        "--arch",
        "tiny",
        "--task",
        "pose",
        "--image-size",
        "64,48",
        "--out",
        "pose.pth",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    r = _cli(
        "convert_weights.torch_to_flax", "--image-size", "64,48", "--pose", "pose.pth", "--out", "ckpt", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert "backbone from --pose" in r.stderr and "tiny" in r.stderr
    r = _cli("hyper_sapiens_jax.inference", "--ckpt", "ckpt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "pose      (2, 16, 12, 17)" in r.stdout
    r = _cli("convert_weights.flax_to_torch", "--ckpt", "ckpt", "--task", "pose", "--out", "back.pth", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a, b = load_state_dict(tmp_path / "pose.pth")[0], load_state_dict(tmp_path / "back.pth")[0]
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    r = _cli(
        "convert_weights.torch_to_flax",
        "--image-size",
        "64,48",
        "--pose",
        "pose.pth",
        "--arch",
        "sapiens_1b",
        "--out",
        "ckpt2",
        cwd=tmp_path,
    )
    assert r.returncode != 0
    assert "error:" in r.stderr and "backbone.patch_embed.projection.weight" in r.stderr
    assert not (tmp_path / "ckpt2").exists()
    r = _cli("convert_weights.flax_to_torch", "--ckpt", "ckpt", "--task", "depth", "--out", "d.pth", cwd=tmp_path)
    assert r.returncode != 0 and "no depth head" in r.stderr
