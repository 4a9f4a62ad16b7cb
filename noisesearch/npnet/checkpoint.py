"""Reading and writing NPNet checkpoints, strictly and without running code.

Two formats:

* **official** (``sdxl.pth``, ``dreamshaper.pth``, ``dit.pth`` from Zhou et al.; hub mirror
  ``Klayand/GoldenNoiseModel``): a torch file holding a dict with exactly the entries
  ``unet_svd``, ``unet_embedding``, ``embeeding`` (sic: the text AdaGroupNorm) — three state
  dicts — and the scalars ``alpha`` and ``beta`` (1-element tensors). Read with
  ``torch.load(weights_only=True)``. The official ``SVDNoiseUnet`` builds a ``BatchNorm2d`` that its
  ``forward`` never calls, so ``unet_svd`` also holds its five ``bn.*`` entries; they are set aside
  by exact name (:data:`UNUSED_OFFICIAL_KEYS`) and reported, and nothing else unexpected is accepted.
* **noisesearch** (``.safetensors``): the flat state dict of :class:`~noisesearch.npnet.model.NPNet`
  with its :class:`~noisesearch.npnet.model.NPNetConfig` as JSON in the file's metadata.

Both are validated key by key and shape by shape; an error names the first missing, unexpected
and mis-shaped keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from noisesearch.io.checkpoints import load_strict, load_weights, mismatch_error
from noisesearch.npnet.model import NPNet, NPNetConfig, preset

#: top-level entries of an official checkpoint -> prefix of the same weights in :class:`NPNet`
OFFICIAL_ENTRIES: dict[str, str] = {
    "unet_svd": "unet_svd.",
    "unet_embedding": "unet_embedding.",
    "embeeding": "text_embedding.",  # sic, as in the official files
}
OFFICIAL_SCALARS = ("alpha", "beta")
#: entries of official checkpoints that the official forward never reads, by exact name: the
#: official ``SVDNoiseUnet.__init__`` creates ``self.bn = nn.BatchNorm2d(256)`` and ``forward`` never
#: uses it, so every official file (sdxl.pth, dreamshaper.pth, dit.pth) carries its state
UNUSED_OFFICIAL_KEYS: dict[str, tuple[str, ...]] = {
    "unet_svd": ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"),
}
#: what to pass instead when an NPNet checkpoint does not match (ends every mismatch error)
NPNET_HINT = (
    "Pass an official NPNet checkpoint (sdxl.pth, dreamshaper.pth or dit.pth, hub Klayand/GoldenNoiseModel) "
    "or a file written by `noisesearch npnet train`/`convert`, and --preset if its architecture is not inferred."
)
CONFIG_KEY = "noisesearch_npnet_config"
#: buffers timm recomputes at construction; older timm versions saved them, newer ones do not
RECOMPUTED_BUFFERS = ("relative_position_index", "attn_mask")


def _is_recomputed(key: str) -> bool:
    return key.rsplit(".", 1)[-1] in RECOMPUTED_BUFFERS


@dataclass(frozen=True)
class OfficialWeights:
    """An official checkpoint read into :class:`NPNet`'s flat layout."""

    #: the flat :class:`NPNet` state dict (``alpha``/``beta`` as shape-(1,) tensors)
    state_dict: dict[str, torch.Tensor]
    #: known-unused entries found and set aside (e.g. ``unet_svd.bn.weight``), as full names
    set_aside: dict[str, torch.Tensor]


def _is_unused(entry: str, key: str) -> bool:
    return key in UNUSED_OFFICIAL_KEYS.get(entry, ())


def read_official(checkpoint: Mapping[str, object], source: str = "checkpoint") -> OfficialWeights:
    """Validates an official checkpoint's nested dict and flattens it; known-unused entries
    (:data:`UNUSED_OFFICIAL_KEYS`) are set aside, anything else is left for the strict load to judge."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source}: expected a dict of state dicts, found {type(checkpoint).__name__}")
    expected = set(OFFICIAL_ENTRIES) | set(OFFICIAL_SCALARS)
    missing, unexpected = sorted(expected - set(checkpoint)), sorted(set(checkpoint) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} is not an official NPNet checkpoint: "
            + "; ".join(
                p
                for p in (
                    f"missing entries {missing}" if missing else "",
                    f"unexpected entries {unexpected}" if unexpected else "",
                )
                if p
            )
            + ("" if missing else f" (expected exactly {sorted(expected)})")
        )
    flat: dict[str, torch.Tensor] = {}
    set_aside: dict[str, torch.Tensor] = {}
    for entry, prefix in OFFICIAL_ENTRIES.items():
        sd = checkpoint[entry]
        if not isinstance(sd, Mapping):
            raise ValueError(f"{source}: entry {entry!r} should be a state dict, found {type(sd).__name__}")
        for key, value in sd.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(f"{source}: {entry}.{key} is not a tensor")
            if _is_unused(entry, key):
                set_aside[f"{entry}.{key}"] = value
            elif not _is_recomputed(key):
                flat[prefix + key] = value
    for name in OFFICIAL_SCALARS:
        value = checkpoint[name]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{source}: {name!r} should be a tensor, found {type(value).__name__}")
        if value.numel() != 1:
            raise ValueError(f"{source}: {name!r} should be a 1-element tensor, found shape {tuple(value.shape)}")
        flat[name] = value.detach().reshape(1)
    return OfficialWeights(flat, set_aside)


def official_to_flat(checkpoint: Mapping[str, object], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The flat :class:`NPNet` state dict from an official checkpoint's nested dict (known-unused
    entries dropped; see :func:`read_official`)."""
    return read_official(checkpoint, source).state_dict


def _check_set_aside(set_aside: Mapping[str, torch.Tensor], config: NPNetConfig, source: str) -> None:
    """The unused BatchNorm's entries must still have its shapes (256 channels for SDXL), so a file
    whose ``bn`` differs is not mistaken for an official one."""
    bad = []
    for name, value in set_aside.items():
        counter = name.endswith("num_batches_tracked")  # a scalar step count
        if (value.numel() != 1) if counter else (tuple(value.shape) != (config.matrix_size,)):
            bad.append(f"{name}: file {tuple(value.shape)} vs official {() if counter else (config.matrix_size,)}")
    if bad:
        raise mismatch_error("NPNet", source, [], [], bad, NPNET_HINT)


def flat_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """The official nested layout of a flat :class:`NPNet` state dict (inverse of :func:`official_to_flat`)."""
    out: dict[str, object] = {entry: {} for entry in OFFICIAL_ENTRIES}
    for key, value in state_dict.items():
        if key in OFFICIAL_SCALARS:
            out[key] = value.detach().clone()
            continue
        for entry, prefix in OFFICIAL_ENTRIES.items():
            if key.startswith(prefix):
                out[entry][key[len(prefix) :]] = value.detach().clone()  # type: ignore[index]
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


@dataclass(frozen=True)
class OfficialLoad:
    """An official checkpoint loaded into an :class:`NPNet`."""

    #: the network, in eval mode
    net: NPNet
    #: names of the known-unused entries the file held and that were set aside (not loaded)
    set_aside: tuple[str, ...]


def read_official_file(path: str | os.PathLike, config: NPNetConfig | None = None) -> OfficialLoad:
    """An official ``.pth`` NPNet, read with ``weights_only=True`` and loaded strictly, in eval mode,
    with the names of the known-unused entries it held."""
    raw = load_weights(path)
    cfg = config or preset(infer_official_preset(raw))
    weights = read_official(raw, source=str(path))
    _check_set_aside(weights.set_aside, cfg, str(path))
    net = NPNet(cfg)
    load_strict(net, weights.state_dict, source=path, hint=NPNET_HINT)
    return OfficialLoad(net.eval(), tuple(weights.set_aside))


def load_official(path: str | os.PathLike, config: NPNetConfig | None = None) -> NPNet:
    """An official ``.pth`` NPNet, read with ``weights_only=True`` and loaded strictly, in eval mode."""
    return read_official_file(path, config).net


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
        from noisesearch.io.checkpoints import describe_error

        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise ValueError(
            f"cannot write NPNet checkpoint {str(path)!r} ({describe_error(err)}); pass a writable file path"
        ) from None
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a safetensors file; ``ValueError`` names a file that is not one (empty, truncated)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as err:  # safetensors raises its own SafetensorError for empty or corrupt files
        from noisesearch.io.checkpoints import describe_error

        size = Path(path).stat().st_size if Path(path).is_file() else 0
        what = "is empty (0 bytes)" if size == 0 else f"is not a readable safetensors file ({describe_error(err, 80)})"
        raise ValueError(
            f"NPNet checkpoint {str(path)!r} {what}; pass one from `npnet convert` or `npnet train`"
        ) from None


def check_checkpoint_path(path: str | os.PathLike) -> Path:
    """``path`` as an existing regular file; ``ValueError`` says when it is missing or a folder."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(
            f"NPNet checkpoint {str(path)!r} is a folder; pass the checkpoint file itself (.pth or .safetensors)"
        )
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
    load_strict(net, load_weights(path), source=path, hint=NPNET_HINT)
    return net.eval()


def convert_official(src: str | os.PathLike, dst: str | os.PathLike, preset_name: str | None = None) -> OfficialLoad:
    """``noisesearch npnet convert``: official ``.pth`` -> validated noisesearch ``.safetensors``
    (the known-unused entries are not written; :attr:`OfficialLoad.set_aside` names them)."""
    loaded = read_official_file(src, preset(preset_name) if preset_name else None)
    save_npnet(loaded.net, dst, metadata={"converted_from": Path(src).name})
    return loaded
