"""Reading and writing PyTorch checkpoint files safely. The only module here that imports torch.

Formats read (see docs/design.md §2):
  *.pth / *.pt / *.bin      ``torch.load(weights_only=True)``: fine-tuned ``{'state_dict', 'meta'}``
                            or flat pretrain dicts. Pickles that reference anything but tensors,
                            containers and numpy arrays (as mmengine ``meta`` holds) are refused.
  *_torchscript.pt2         ``torch.jit.load(...).state_dict()``
  *.pt2 (torch.export)      ``torch.export.load(...).state_dict`` (the released bf16 models)
  *.safetensors             tensors, plus ``meta`` stored as JSON strings in the file's metadata;
                            read and written without torch (the training install has none)
All tensors come back as float32 numpy arrays (bf16 widened exactly).
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

log = logging.getLogger(__name__)


class CheckpointFileError(ValueError):
    """A checkpoint file cannot be read safely; the message names the file."""


def _torch():
    try:
        import torch  # lazy: optional (the torch extra), only for .pth / .pt2 files
    except ImportError:  # pragma: no cover - depends on the environment
        raise CheckpointFileError(
            "reading/writing PyTorch checkpoints needs torch: pip install 'hyper-sapiens-jax[torch]'"
        ) from None
    return torch


def _numpy_safe_globals() -> list:
    """numpy objects mmengine checkpoints keep in ``meta`` (dataset sigmas, seeds): data, not code."""
    core = getattr(np, "_core", None) or np.core
    return [
        core.multiarray._reconstruct,
        core.multiarray.scalar,
        np.ndarray,
        np.dtype,
        *{type(np.dtype(t)) for t in ("f2", "f4", "f8", "i4", "i8", "u1", "bool")},
    ]


def _to_numpy(tensor) -> np.ndarray:
    torch = _torch()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    return tensor.detach().cpu().numpy()


def _zip_kind(path: Path) -> str | None:
    """'torchscript', 'export' or None (a plain torch.save zip, or not a zip at all)."""
    if not zipfile.is_zipfile(path):
        return None
    names = zipfile.ZipFile(path).namelist()
    if any(n.endswith("/archive_format") for n in names) or any("/models/" in n for n in names):
        return "export"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    return None


def _load_pickle(path: Path) -> Any:
    torch = _torch()
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:
            unsafe = []
        what = f" (it references {', '.join(unsafe)})" if unsafe else ""
        raise CheckpointFileError(
            f"{path}: refused to load: the pickle holds objects other than tensors{what}, which could "
            f"run code on load. Re-save it as plain tensors or safetensors."
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        reason = str(e).strip() or ("the file is empty" if path.stat().st_size == 0 else type(e).__name__)
        raise CheckpointFileError(f"{path}: not a readable PyTorch checkpoint: {reason}") from e


def _split_state_dict(obj: Any, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{'state_dict': sd, 'meta': m}`` or a flat tensor dict -> (sd, meta)."""
    torch = _torch()
    if isinstance(obj, dict) and "state_dict" in obj:
        sd, meta = obj["state_dict"], obj.get("meta") or {}
    elif isinstance(obj, dict):
        sd, meta = obj, {}
    else:
        raise CheckpointFileError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    if not isinstance(sd, dict):
        raise CheckpointFileError(f"{path}: 'state_dict' is a {type(sd).__name__}, not a dict")
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointFileError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor")
    return sd, meta if isinstance(meta, dict) else {}


def load_state_dict(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read any supported checkpoint file -> (flat key -> float32 array, meta dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    torch = _torch()
    meta: dict[str, Any] = {}
    kind = _zip_kind(path)
    try:
        if kind == "torchscript":
            sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        elif kind == "export":
            sd = dict(torch.export.load(str(path)).state_dict)
        else:
            sd, meta = _split_state_dict(_load_pickle(path), path)
    except CheckpointFileError:
        raise
    except Exception as e:
        raise CheckpointFileError(
            f"{path}: cannot read this {kind or 'torch'} archive ({type(e).__name__}: {e}); expected a torch.save "
            "checkpoint, a TorchScript or torch.export archive, or a .safetensors file"
        ) from e
    log.info("%s: read as %s", path, kind or "torch.save pickle")
    return {k: _to_numpy(v) for k, v in sd.items()}, meta


def load_safetensors(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A .safetensors file -> (key -> float32 array, meta), without torch (bf16 widened exactly)."""
    try:
        with safe_open(str(path), framework="np") as f:
            meta = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
            keys = list(f.keys())
            bf16 = [k for k in keys if f.get_slice(k).get_dtype() == "BF16"]
            # Floats widen to float32; anything else stays as stored (the layout refuses it by key).
            sd = {k: _float32(f.get_tensor(k)) for k in keys if k not in bf16}
        if bf16:
            sd.update(_read_bf16(Path(path), bf16))
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError, KeyError) as e:
        raise CheckpointFileError(f"{path}: not a readable safetensors file: {e}") from e
    return sd, meta


def _float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32) if np.issubdtype(array.dtype, np.floating) else array


def _read_bf16(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    """bfloat16 tensors (numpy has no bf16) read from the file's raw bytes, widened to float32."""
    with open(path, "rb") as fh:
        size = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(size))
        base = 8 + size
        out = {}
        for k in keys:
            start, stop = header[k]["data_offsets"]
            fh.seek(base + start)
            raw = np.frombuffer(fh.read(stop - start), "<u2").astype(np.uint32) << 16
            out[k] = raw.view(np.float32).reshape(header[k]["shape"])
    return out


def write_safetensors(path: str | Path, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``tensors`` and ``meta`` (values stored as JSON strings) as a .safetensors file whose
    bytes depend only on its contents: the safetensors library writes the metadata in hash order,
    which changes between processes, so the header is re-serialised with sorted keys (the data
    offsets are relative to the end of the header, so they stay valid). The same weights then give
    the same sha256, which the foundation's manifest records. Written through a temporary file."""
    blob = save(tensors, metadata={k: json.dumps(v) for k, v in meta.items()})
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # safetensors pads the header with spaces to 8 bytes
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(len(header).to_bytes(8, "little") + header + blob[8 + n :])
    tmp.replace(path)


def save_state_dict(
    path: str | Path, state_dict: dict[str, np.ndarray], meta: dict[str, Any], dtype=np.float32
) -> None:
    """Write ``{'state_dict', 'meta'}`` as .pth (torch.save) or .safetensors (meta as JSON strings;
    no torch needed). ``dtype``: the stored float type (float32, or float16 for small files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if path.suffix == ".safetensors":
        write_safetensors(path, {k: np.ascontiguousarray(v, dtype) for k, v in state_dict.items()}, meta)
        return
    torch = _torch()
    tensors = {k: torch.from_numpy(np.array(v, order="C", dtype=dtype)) for k, v in state_dict.items()}
    if path.suffix in (".pth", ".pt"):
        torch.save({"state_dict": tensors, "meta": meta}, tmp)
    else:
        raise CheckpointFileError(f"{path}: output must end in .pth, .pt or .safetensors")
    tmp.replace(path)  # never leave a truncated file under the final name
