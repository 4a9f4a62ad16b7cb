"""CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image
Captioning") on any open_clip model.

    CLIPScore(image, text) = w · max(cos(E_image(image), E_text(text)), 0),   w = 2.5

Preprocessing follows open_clip's eval transform (torchvision ``Resize`` of the shortest side with
bicubic interpolation, ``CenterCrop`` to the model's image size, normalise with the model's
mean/std). By default (``preprocess="float"``) it runs as batched torch ops on the [B, 3, H, W]
tensor, so the score is differentiable with respect to the images; ``preprocess="official"`` runs
the reference's 8-bit Pillow resize instead (see :mod:`noisesearch.verifiers.transforms`). The same
class serves real CLIP checkpoints and the toy world's small CLIP (`toyclip`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from noisesearch.io.checkpoints import mismatch_error, unreadable_error
from noisesearch.io.paths import user_path
from noisesearch.verifiers.base import register_verifier
from noisesearch.verifiers.transforms import check_preprocess, pil_resize_center_crop, resize_center_crop

# open_clip's default file names inside a hub repo (open_clip.constants)
_HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
_HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"

Tokenizer = Callable[[list[str]], torch.Tensor]


class CLIPScoreVerifier:
    """CLIPScore with an open_clip ``CLIP`` model; differentiable with respect to the images.

    ``tokenizer(list[str]) -> LongTensor[B, context_length]`` is any open_clip-style tokenizer.
    Text embeddings do not depend on the images; they are computed without gradient and cached
    per prompt (``text_cache`` entries, 0 disables), which matters in search where one prompt is
    scored against many candidates. Call :meth:`clear_cache` after changing the model's weights.
    ``preprocess_mode`` is ``"float"`` (differentiable) or ``"official"`` (8-bit Pillow resize, as
    the reference transform; not differentiable); ``crop`` is the centre-crop rounding of the
    reference (``"torchvision"`` or ``"transformers"``).
    """

    #: True unless ``preprocess_mode="official"`` (set per instance)
    differentiable: bool = True

    def __init__(
        self,
        model: Any,  # an open_clip CLIP, or any module with encode_image / encode_text
        tokenizer: Tokenizer,
        image_size: int | tuple[int, int],
        mean: Sequence[float],
        std: Sequence[float],
        w: float = 2.5,
        name: str = "clipscore",
        text_cache: int = 1024,
        preprocess_mode: str = "float",
        crop: str = "torchvision",
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.w = float(w)
        self.name = name
        self._text_cache_size = int(text_cache)
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.preprocess_mode = check_preprocess(preprocess_mode)
        if crop not in ("torchvision", "transformers"):
            raise ValueError(f"crop must be 'torchvision' or 'transformers', got {crop!r}")
        self.crop = crop
        self.differentiable = preprocess_mode == "float"
        if preprocess_mode == "official" and self.image_size[0] != self.image_size[1]:
            raise ValueError(
                f"preprocess='official' needs a square model input, got {self.image_size}; use preprocess='float'"
            )

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_open_clip(
        cls,
        model_name: str = "ViT-L-14",
        pretrained: str | os.PathLike | None = "openai",
        device: str | torch.device = "cpu",
        *,
        w: float = 2.5,
        cache_dir: str | os.PathLike | None = None,
        name: str = "clipscore",
        quick_gelu: bool | None = None,
        preprocess: str = "float",
    ) -> CLIPScoreVerifier:
        """Builds the open_clip architecture ``model_name`` offline and loads its weights.

        ``pretrained`` is an open_clip tag (resolved from the local Hugging Face cache or
        ``cache_dir``, never downloaded), a local checkpoint (``.safetensors``, or a torch file
        read with ``weights_only=True``), or ``None`` for random weights (tests only).
        ``quick_gelu``: build with QuickGELU, as OpenAI's CLIP weights need; ``None`` follows the tag
        (open_clip marks the ``openai`` tags), so a *file* of OpenAI weights needs ``True``.
        ``preprocess``: ``"float"`` or ``"official"`` (see the class docstring).
        """
        import open_clip

        if open_clip.get_model_config(model_name) is None:
            raise ValueError(
                f"unknown open_clip architecture {model_name!r}; choose one of open_clip.list_models(), "
                "e.g. ViT-L-14, ViT-B-32, ViT-H-14"
            )
        check_preprocess(preprocess)
        checkpoint, tag_cfg = _resolve_checkpoint(model_name, pretrained, cache_dir)
        norm = {k: tag_cfg[k] for k in ("mean", "std") if k in tag_cfg}
        if quick_gelu is None:
            quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        with quiet_random_init():  # the weights are loaded right after
            model = open_clip.create_model(
                model_name,
                pretrained=None,
                device="cpu",
                # the OpenAI weights were trained with QuickGELU; open_clip only warns on a mismatch
                force_quick_gelu=quick_gelu,
                force_preprocess_cfg=norm or None,
                pretrained_image=False,
                pretrained_text=False,
            )
        if checkpoint is not None:
            _load_checkpoint(model, checkpoint, model_name)
        model = model.to(device).eval().requires_grad_(False)
        try:
            tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as err:  # HF tokenizers of some architectures need the hub cache
            raise FileNotFoundError(
                f"the tokenizer of open_clip model {model_name!r} could not be loaded offline ({err}); "
                "put it in the Hugging Face cache first"
            ) from err
        pp = open_clip.get_model_preprocess_cfg(model)
        return cls(model, tokenizer, pp["size"], pp["mean"], pp["std"], w=w, name=name, preprocess_mode=preprocess)

    # --- scoring ------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [0, 1] -> [B, 3, h, w] normalised, as open_clip's eval transform."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(images.shape)}")
        th, tw = self.image_size
        if th == tw:
            # 1-2. torchvision Resize(th) of the shortest side, CenterCrop(th)
            crop = pil_resize_center_crop if self.preprocess_mode == "official" else resize_center_crop
            x = crop(images, th, self.crop)
        else:  # a non-square input: scale so both sides cover the target, centre crop
            h, w = images.shape[-2:]
            scale = max(th / h, tw / w)
            nh, nw = max(th, int(h * scale)), max(tw, int(w * scale))
            x = images
            if (nh, nw) != (h, w):
                x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
            top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
            x = x[..., top : top + th, left : left + tw]
        # 3. normalise
        return (x - self.mean.to(x)) / self.std.to(x)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings [B, D]."""
        param = next(self.model.parameters())
        x = self.preprocess(images.to(device=param.device, dtype=torch.float32)).to(param.dtype)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    def encode_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings [B, D]; unique prompts are encoded once."""
        unique = list(dict.fromkeys(prompts))
        missing = [p for p in unique if p not in self._text_cache]
        device = next(self.model.parameters()).device
        if missing:
            with torch.no_grad():
                tokens = self.tokenizer(missing).to(device)
                emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            new = dict(zip(missing, emb))
        else:
            new = {}
        table = torch.stack([new[p] if p in new else self._text_cache[p].to(device) for p in unique])
        if self._text_cache_size > 0:
            for p, e in new.items():
                self._text_cache[p] = e
            for p in unique:
                self._text_cache.move_to_end(p)
            while len(self._text_cache) > self._text_cache_size:
                self._text_cache.popitem(last=False)
        index = {p: i for i, p in enumerate(unique)}
        return table[torch.tensor([index[p] for p in prompts], device=device)]

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """images [B, 3, H, W] in [0, 1], B prompts -> CLIPScore [B] in [0, w]."""
        prompts = list(prompts)
        if len(prompts) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(prompts)} prompts; pass one prompt per image")
        image_emb = self.encode_images(images)  # [B, D]
        text_emb = self.encode_texts(prompts)  # [B, D]
        cos = (image_emb * text_emb).sum(dim=-1)
        return self.w * cos.clamp_min(0.0)

    def clear_cache(self) -> None:
        self._text_cache.clear()


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def quiet_random_init() -> Iterator[None]:
    """open_clip warns that a model built without a tag is random; ours is loaded right after."""
    root, flt = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _resolve_checkpoint(
    model_name: str, pretrained: str | os.PathLike | None, cache_dir: str | os.PathLike | None
) -> tuple[Path | None, dict]:
    """Returns (local checkpoint file or None, the open_clip pretrained config of a tag or {})."""
    import open_clip

    if pretrained is None:
        return None, {}
    tag_cfg = open_clip.get_pretrained_cfg(model_name, str(pretrained)) if isinstance(pretrained, str) else {}
    if not tag_cfg:
        path = user_path(pretrained)
        if path.is_file():
            return path, {}
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        hubs = sorted({_hub_of(open_clip.get_pretrained_cfg(model_name, t))[0] for t in tags} - {""})
        raise FileNotFoundError(
            f"CLIP checkpoint {str(path)!r} not found for {model_name}. Pass an existing local file or an "
            f"open_clip tag ({_short(tags)}) with the `pretrained` option (verifier option pretrained=...); "
            f"weights for this architecture come from hub repos such as {_short(hubs)}"
        )
    repo, filename = _hub_of(tag_cfg)
    tried: list[str] = []
    if repo:
        from huggingface_hub import hf_hub_download

        names = [_HF_SAFE_WEIGHTS_NAME, filename] if filename == _HF_WEIGHTS_NAME else [filename]
        if filename.endswith((".bin", ".pth", ".pt")) and filename != _HF_WEIGHTS_NAME:
            names.insert(0, filename.rsplit(".", 1)[0] + ".safetensors")
        for fname in names:
            try:
                found = hf_hub_download(
                    repo, fname, cache_dir=None if cache_dir is None else os.fspath(cache_dir), local_files_only=True
                )
                return Path(found), tag_cfg
            except Exception:
                tried.append(fname)
    url = tag_cfg.get("url", "")
    if url:
        local = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.is_file():
            return local, tag_cfg
        tried.append(str(local))
    raise FileNotFoundError(
        f"weights for open_clip {model_name}/{pretrained} are not available offline: looked for "
        f"{tried} in the Hugging Face cache{f' ({cache_dir})' if cache_dir else ''}"
        f"{f' from hub repo {repo!r}' if repo else ''}. Download them (e.g. `hf download {repo} {filename}`) "
        "or pass a local checkpoint file with the `pretrained` option (verifier option pretrained=PATH)."
    )


_SIZE_MISMATCH = re.compile(
    r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([^\]]*)\]\) from checkpoint, "
    r"the shape in current model is torch\.Size\(\[([^\]]*)\]\)"
)


def _load_checkpoint(model: torch.nn.Module, checkpoint: Path, model_name: str) -> None:
    """open_clip's loader (it converts third-party layouts), kept safe and strict: a file that is not
    plain tensors, and any missing, unexpected or mis-shaped key, is a ``ValueError`` naming them."""
    import open_clip

    def shape(dims: str) -> str:
        return str(tuple(int(d) for d in dims.split(",") if d.strip()))

    architecture = f"open_clip {model_name}"
    try:
        incompatible = open_clip.load_checkpoint(model, str(checkpoint), strict=False, weights_only=True)
    except RuntimeError as err:
        shapes = [f"{k}: file {shape(a)} vs model {shape(b)}" for k, a, b in _SIZE_MISMATCH.findall(str(err))]
        if not shapes:  # not a state-dict mismatch: a truncated or foreign file
            raise unreadable_error(checkpoint, err) from err
        raise mismatch_error(architecture, checkpoint, [], [], shapes) from err
    except Exception as err:  # pickled code or objects (refused by weights_only=True), not a torch file
        raise unreadable_error(checkpoint, err) from err
    missing, unexpected = list(incompatible.missing_keys), list(incompatible.unexpected_keys)
    if missing or unexpected:
        raise mismatch_error(architecture, checkpoint, missing, unexpected, [])


def _short(items: Sequence[str], keep: int = 4) -> str:
    """A readable excerpt of a long list for error messages."""
    items = list(items)
    if not items:
        return "(none listed)"
    more = f", ... ({len(items) - keep} more)" if len(items) > keep else ""
    return ", ".join(items[:keep]) + more


def _hub_of(tag_cfg: dict) -> tuple[str, str]:
    """'org/repo/file.bin' -> ('org/repo', 'file.bin'); a trailing slash means the default file."""
    hub = tag_cfg.get("hf_hub", "") if tag_cfg else ""
    if not hub:
        return "", ""
    repo, filename = os.path.split(hub)
    return repo, filename or _HF_WEIGHTS_NAME


def validate_preprocess(preprocess: str = "float", **_: object) -> None:
    """``validate=`` of every verifier with a ``preprocess`` option: checks its value, loads nothing."""
    check_preprocess(preprocess)


def optional_bool(value: object, name: str) -> bool | None:
    """An option that is on, off or automatic: a bool, None, or "true"/"false"/"auto" as text."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    table = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "auto": None, "none": None}
    if text not in table:
        raise ValueError(f"option {name} must be true, false or auto, got {value!r}")
    return table[text]


def _validate_clipscore(preprocess: str = "float", quick_gelu: object = None, **_: object) -> None:
    check_preprocess(preprocess)
    optional_bool(quick_gelu, "quick_gelu")


@register_verifier(
    "clipscore",
    "CLIPScore, 2.5·max(cos, 0), on an open_clip model (default ViT-L-14/openai)",
    validate=_validate_clipscore,
)
def clipscore_factory(
    device: str | torch.device = "cpu",
    model: str = "ViT-L-14",
    pretrained: str | None = "openai",
    w: float = 2.5,
    cache_dir: str | None = None,
    quick_gelu: bool | str | None = None,
    preprocess: str = "float",
) -> CLIPScoreVerifier:
    """Options: ``model`` (open_clip architecture), ``pretrained`` (tag or local file), ``w``, ``cache_dir``,
    ``quick_gelu`` (True for a file of OpenAI weights; default: as the tag says), ``preprocess``
    ("float" or "official")."""
    return CLIPScoreVerifier.from_open_clip(
        model,
        pretrained,
        device,
        w=w,
        cache_dir=cache_dir,
        quick_gelu=optional_bool(quick_gelu, "quick_gelu"),
        preprocess=preprocess,
    )
