"""Reading and writing NPNet checkpoints, strictly and without running code.

Two formats:

* **official** (``sdxl.pth``, ``dreamshaper.pth``, ``dit.pth`` from Zhou et al.; hub mirror
  ``Klayand/GoldenNoiseModel``): a torch file holding a dict with exactly the entries
  ``unet_svd``, ``unet_embedding``, ``embeeding`` (sic: the text AdaGroupNorm) — three state
  dicts — and the scalars ``alpha`` and ``beta``. Read with ``torch.load(weights_only=True)``.
* **noisesearch** (``.safetensors``): the flat state dict of :class:`~noisesearch.npnet.model.NPNet`
  with its :class:`~noisesearch.npnet.model.NPNetConfig` as JSON in the file's metadata.

Both are validated key by key and shape by shape; an error names the first missing, unexpected
and mis-shaped keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from noisesearch.npnet.model import NPNet, NPNetConfig, preset
from noisesearch.verifiers.checkpoints import load_strict, load_weights

#: top-level entries of an official checkpoint -> prefix of the same weights in :class:`NPNet`
OFFICIAL_ENTRIES: dict[str, str] = {
    "unet_svd": "unet_svd.",
    "unet_embedding": "unet_embedding.",
    "embeeding": "text_embedding.",  # sic, as in the official files
}
OFFICIAL_SCALARS = ("alpha", "beta")
CONFIG_KEY = "noisesearch_npnet_config"
#: buffers timm recomputes at construction; older timm versions saved them, newer ones do not
RECOMPUTED_BUFFERS = ("relative_position_index", "attn_mask")


def _is_recomputed(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in RECOMPUTED_BUFFERS


def official_to_flat(checkpoint: Mapping[str, object], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The flat :class:`NPNet` state dict from an official checkpoint's nested dict."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source}: expected a dict of state dicts, found {type(checkpoint).__name__}")
    expected = set(OFFICIAL_ENTRIES) | set(OFFICIAL_SCALARS)
    missing, unexpected = sorted(expected - set(checkpoint)), sorted(set(checkpoint) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} is not an official NPNet checkpoint: "
            + "; ".join(p for p in (f"missing entries {missing}" if missing else "",
                                    f"unexpected entries {unexpected}" if unexpected else "") if p)
            + ("" if missing else f" (expected exactly {sorted(expected)})")
        )
    flat: dict[str, torch.Tensor] = {}
    for entry, prefix in OFFICIAL_ENTRIES.items():
        sd = checkpoint[entry]
        if not isinstance(sd, Mapping):
            raise ValueError(f"{source}: entry {entry!r} should be a state dict, found {type(sd).__name__}")
        for key, value in sd.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{source}: {entry}.{key} is not a tensor")
            if not _is_recomputed(key):
                flat[prefix + key] = value
    for name in OFFICIAL_SCALARS:
        value = checkpoint[name]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{source}: {name!r} should be a tensor, found {type(value).__name__}")
        flat[name] = value.reshape(1)
    return flat


def flat_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """The official nested layout of a flat :class:`NPNet` state dict (inverse of :func:`official_to_flat`)."""
    out: dict[str, object] = {entry: {} for entry in OFFICIAL_ENTRIES}
    for key, value in state_dict.items():
        if key in OFFICIAL_SCALARS:
            out[key] = value.detach().clone()
            continue
        for entry, prefix in OFFICIAL_ENTRIES.items():
            if key.startswith(prefix):
                out[entry][key[len(prefix):]] = value.detach().clone()  # type: ignore[index]
                break
        else:
            raise ValueError(f"key {key!r} has no place in the official layout")
    return out


def infer_official_preset(checkpoint: Mapping[str, object]) -> str:
    """``sdxl`` or ``dit`` from the width of the text AdaGroupNorm (77 × 2048 or 77 × 1024)."""
    try:
        weight = checkpoint["embeeding"]["linear.weight"]  # type: ignore[index]
    except (KeyError, TypeError):
        return "sdxl"  # official_to_flat will then name what is missing
    width = int(weight.shape[1])
    for name in ("sdxl", "dit"):
        cfg = preset(name)
        if width == cfg.text_tokens * cfg.text_dim:
            return name
    raise ValueError(
        f"the text embedding of this checkpoint is {width} wide, which matches no official NPNet "
        "(77×2048 for SDXL/DreamShaper, 77×1024 for Hunyuan-DiT); pass --preset explicitly"
    )


def load_official(path: str | os.PathLike, config: NPNetConfig | None = None) -> NPNet:
    """An official ``.pth`` NPNet, read with ``weights_only=True`` and loaded strictly, in eval mode."""
    raw = load_weights(path)
    cfg = config or preset(infer_official_preset(raw))
    net = NPNet(cfg)
    load_strict(net, official_to_flat(raw, source=str(path)), source=path)
    return net.eval()


def save_npnet(net: NPNet, path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Writes a noisesearch safetensors file (weights + config in the metadata), atomically.

    ``ValueError`` names the file when it cannot be written (a folder in its place, no permission).
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items() if not _is_recomputed(k)}
    meta = {CONFIG_KEY: net.config.to_json(), **dict(metadata or {})}
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
    except Exception as err:  # OSError, or safetensors' own error type for a failed write
        from noisesearch.verifiers.checkpoints import describe_error

        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise ValueError(f"cannot write NPNet checkpoint {str(path)!r} ({describe_error(err)}); pass a writable file path") from None
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file; ``ValueError`` names a file that is not one (empty, truncated)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own SafetensorError for empty or corrupt files
        from noisesearch.verifiers.checkpoints import describe_error

        size = Path(path).stat().st_size if Path(path).is_file() else 0
        what = "is empty (0 bytes)" if size == 0 else f"is not a readable safetensors file ({describe_error(err, 80)})"
        raise ValueError(f"NPNet checkpoint {str(path)!r} {what}; pass one from `npnet convert` or `npnet train`") from None


def check_checkpoint_path(path: str | os.PathLike) -> Path:
    """``path`` as an existing regular file; ``ValueError`` says when it is missing or a folder."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"NPNet checkpoint {str(path)!r} is a folder; pass the checkpoint file itself (.pth or .safetensors)")
    if not p.is_file():
        raise FileNotFoundError(f"NPNet checkpoint {str(path)!r} does not exist")
    return p


def load_npnet(path: str | os.PathLike, preset_name: str | None = None) -> NPNet:
    """An NPNet from a noisesearch ``.safetensors`` file or an official ``.pth``, strictly, in eval mode.

    ``preset_name`` picks the architecture of an official file (inferred from its text width when
    omitted) or of a safetensors file without noisesearch metadata.
    """
    path = check_checkpoint_path(path)
    if path.suffix != ".safetensors":
        return load_official(path, preset(preset_name) if preset_name else None)
    meta = read_metadata(path)
    if CONFIG_KEY in meta:
        cfg = NPNetConfig.from_json(meta[CONFIG_KEY])
    elif preset_name:
        cfg = preset(preset_name)
    else:
        raise ValueError(f"{str(path)!r} has no NPNet config in its metadata; pass the preset (e.g. --preset sdxl)")
    net = NPNet(cfg)
    load_strict(net, load_weights(path), source=path)
    return net.eval()


def convert_official(src: str | os.PathLike, dst: str | os.PathLike, preset_name: str | None = None) -> NPNet:
    """``noisesearch npnet convert``: official ``.pth`` -> validated noisesearch ``.safetensors``."""
    net = load_official(src, preset(preset_name) if preset_name else None)
    save_npnet(net, dst, metadata={"converted_from": Path(src).name})
    return net
