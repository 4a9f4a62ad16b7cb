"""An open vision-language model as a judge: offline loading and next-token log-probabilities.

The VLM verifiers (:mod:`noisesearch.verifiers.vlm`) ask a question about each image and read the
answer's probability straight from the model's next-token distribution (VQAScore, Lin et al. 2024,
"Evaluating Text-to-Visual Generation with Image-to-Text Generation", arXiv:2404.01291), instead of
generating text and parsing it. This module does the model side:

1. load the model and its own processor and chat template from a local folder or the Hugging Face
   cache with ``local_files_only`` (never the network);
2. build one chat per (image, question) row with the model's chat template and a generation
   prompt, so the next token is the first token of the assistant's answer;
3. push all rows through **one** forward, left-padded, with the attention mask and position ids
   that make a row's logits independent of the rows it is batched with (Qwen2.5-VL: the processor's
   ``mm_token_type_ids`` let the model build its 3-D "mrope" position ids from the attention mask;
   other families: position ids = cumulative sum of the attention mask − 1);
4. return the log-softmax at the answer position (and after optional forced answer tokens).

Families: Qwen2-VL / Qwen2.5-VL (default; image preprocessing re-implemented in torch, so scores are
differentiable with respect to the images) and any other image-text-to-text model transformers
loads with a chat template (tested: Idefics3, the SmolVLM architecture), whose processor runs
outside autograd (its resize, tiling and padding are not re-implemented here), so not differentiable.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from noisesearch.io.checkpoints import HubFolder, parse_dtype, resolve_folder, unreadable_error
from noisesearch.io.paths import user_path

#: model types whose pixels are prepared in torch (differentiable)
QWEN_TYPES = ("qwen2_5_vl", "qwen2_vl")
#: files that make a folder a loadable VLM checkpoint
VLM_REQUIRED = ("config.json",)
VLM_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def hub_folder(hub_id: str, env_var: str = "") -> HubFolder:
    """The offline lookup spec of a VLM checkpoint published at ``hub_id``."""
    return HubFolder((hub_id,), VLM_REQUIRED, env_var, option="model", any_of=VLM_WEIGHTS)


def resolve_model_folder(
    model: str | os.PathLike | None, defaults: Sequence[HubFolder], cache_dir: str | os.PathLike | None = None
) -> Path:
    """The checkpoint folder for the ``model`` option, offline.

    ``None``: the first of ``defaults`` found (environment variable or HF cache); an existing folder:
    that folder; otherwise ``model`` is a hub id looked up in the HF cache. A miss raises
    ``FileNotFoundError`` naming the hub id and where to put the checkpoint.
    """
    if model is None:
        errors = []
        for spec in defaults:
            try:
                return resolve_folder(spec, None, cache_dir)
            except FileNotFoundError as err:
                errors.append(str(err))
        raise FileNotFoundError(
            errors[0] if len(errors) == 1 else "no default judge checkpoint is available offline: " + " | ".join(errors)
        )
    text = str(model)
    p = user_path(text)
    if not (p.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1):
        return resolve_folder(hub_folder(text), None, cache_dir)  # a hub id, from the HF cache
    if not p.is_dir():
        raise FileNotFoundError(
            f"option model= points at {str(p)!r}, which is not a folder; pass a checkpoint folder (save_pretrained "
            "layout, e.g. a download of Qwen/Qwen2.5-VL-3B-Instruct) or a hub id in the Hugging Face cache"
        )
    missing = [f for f in VLM_REQUIRED if not (p / f).is_file()]
    if missing or not any((p / f).is_file() for f in VLM_WEIGHTS):
        raise FileNotFoundError(
            f"folder {str(p)!r} (option model=) lacks {', '.join(missing) or 'the weights'}; "
            "expected a complete vision-language checkpoint (config, processor, weights)"
        )
    return p


def resize_longest(images: torch.Tensor, max_size: int) -> torch.Tensor:
    """Downscales [B, 3, H, W] so the longer side is at most ``max_size`` (bicubic, antialiased,
    differentiable); smaller images pass unchanged. ``max_size`` 0 keeps every size."""
    h, w = images.shape[-2:]
    if max_size <= 0 or max(h, w) <= max_size:
        return images
    s = max_size / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's target size: both sides multiples of ``factor``, area within [min, max] pixels,
    aspect ratio kept (the rule of transformers' ``Qwen2VLImageProcessor``)."""
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen_pixel_values(images: torch.Tensor, image_processor: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2-VL / Qwen2.5-VL image preprocessing in torch, differentiable with respect to ``images``.

    images [B, 3, H, W] in [0, 1] -> (pixel_values [B·gh·gw, 3·T·p·p], image_grid_thw [B, 3]):
    1. resize (bicubic, antialiased) to :func:`smart_resize`'s size, as the processor does on tensors;
    2. normalise with the processor's mean and std;
    3. cut p×p patches in the processor's order (merge-window major), each repeated T times in time.
    """
    ip = image_processor
    p, m, t = int(ip.patch_size), int(ip.merge_size), int(ip.temporal_patch_size)
    b, c, h, w = images.shape
    rh, rw = smart_resize(h, w, p * m, int(ip.size["shortest_edge"]), int(ip.size["longest_edge"]))
    x = (
        images
        if (rh, rw) == (h, w)
        else F.interpolate(images, size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
    )
    mean = torch.tensor(ip.image_mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(ip.image_std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    x = (x - mean) / std
    gh, gw = rh // p, rw // p
    x = x.reshape(b, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # [B, gh/m, gw/m, m, m, C, p, p]
    x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, t, -1, -1).reshape(b * gh * gw, c * t * p * p)
    grid = torch.tensor([[1, gh, gw]] * b, dtype=torch.long)
    return x, grid


@dataclass
class VLMJudge:
    """A loaded vision-language model, its processor, and how to run it."""

    model: Any  # a transformers image-text-to-text model (torch.nn.Module)
    processor: Any
    #: "qwen" (torch preprocessing, differentiable) or "generic" (the processor's own)
    family: str
    device: torch.device
    dtype: torch.dtype
    #: longest image side before the processor (0: the processor's own sizing only)
    max_image_size: int
    #: where the checkpoint was read from
    source: str = ""
    _parts: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def differentiable(self) -> bool:
        return self.family == "qwen"

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def chat(self, question: str) -> str:
        """The model's own chat for one image and ``question``, ending where the answer starts."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def template_parts(self) -> tuple[str, str]:
        """The chat split around the question: (image part and everything before it, what follows the
        question up to the answer). Every row shares the first part, so it is processed once per image."""
        if self._parts is None:
            marker = "\ue000"  # a private-use character no template rewrites
            pieces = self.chat(marker).split(marker)
            if len(pieces) != 2:
                raise ValueError(f"the chat template of {self.source} does not place the question once; cannot score")
            self._parts = (pieces[0], pieces[1])
        return self._parts

    def answer_logprobs(
        self,
        images: torch.Tensor,
        questions: Sequence[str],
        image_index: Sequence[int] | None = None,
        forced: Sequence[int] = (),
    ) -> torch.Tensor:
        """Log-probabilities of the next token, one batched forward over all rows.

        images [M, 3, H, W] in [0, 1]; questions: N strings; ``image_index[r]``: the image row r asks
        about (default: row r asks about image r); ``forced``: token ids appended after the generation
        prompt (the same for every row). Each image is preprocessed and encoded once, however many rows
        ask about it. Returns [N, 1 + len(forced), V] float32: the distribution of the answer's first
        token, then after each forced token.
        """
        index = list(range(len(questions))) if image_index is None else [int(i) for i in image_index]
        if len(index) != len(questions) or any(not 0 <= i < images.shape[0] for i in index):
            raise ValueError(f"image_index must give one image (of {images.shape[0]}) per question ({len(questions)})")
        # 1. downscale large images (differentiable), in float32 for the preprocessing
        x = resize_longest(images.to(self.device, torch.float32), self.max_image_size)
        # 2. the shared part of the chat (template start, image tokens) with each image, once per image
        head, tail = self.template_parts()
        enc = self.processor(
            text=[head] * x.shape[0],
            images=[[img] for img in x.detach()],
            padding=True,
            return_tensors="pt",
            do_rescale=False,
        )
        head_ids, head_mask = enc.pop("input_ids"), enc.pop("attention_mask")
        enc.pop("mm_token_type_ids", None)
        if not bool(head_mask.all()):
            raise RuntimeError("images of one call gave different numbers of image tokens; pass images of one size")
        vision = {k: v.to(self.device) for k, v in enc.items()}  # pixel_values, image_grid_thw / pixel_attention_mask
        if self.family == "qwen":
            # 3. pixels from the images through torch ops, so gradients reach the images
            pixels, grid = qwen_pixel_values(x, self.processor.image_processor)
            if tuple(pixels.shape) != tuple(vision["pixel_values"].shape) or not torch.equal(
                grid.to(self.device), vision["image_grid_thw"]
            ):
                raise RuntimeError(
                    f"torch preprocessing gave pixel_values {tuple(pixels.shape)}, grid {grid.tolist()} but the "
                    f"processor gave {tuple(vision['pixel_values'].shape)}, {vision['image_grid_thw'].tolist()}"
                )
            vision["pixel_values"] = pixels
        vision["pixel_values"] = vision["pixel_values"].to(self.dtype)
        # 4. encode each image once: M per-image feature blocks [tokens, D]
        features = list(self.model.get_image_features(**vision, return_dict=True).pooler_output)
        # 5. rows: their image's shared part + question + generation prompt + forced tokens, left-padded
        tails = self.tokenizer([q + tail for q in questions], add_special_tokens=False)["input_ids"]
        rows = [head_ids[i].tolist() + list(t) + list(forced) for i, t in zip(index, tails)]
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        inputs = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=[features[i] for i in index])},
        }
        if self.family == "qwen":
            # 6. Qwen's 3-D (mrope) positions are built by the model from the token types, the per-row image
            # grids and the attention mask, so left padding shifts nothing
            types = self.processor.create_mm_token_type_ids([[pad] * (width - len(r)) + r for r in rows])
            inputs["mm_token_type_ids"] = torch.as_tensor(types, device=self.device) * mask
            inputs["image_grid_thw"] = vision["image_grid_thw"][index]
        else:
            # 6'. positions count real tokens only, so left padding does not shift a row
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = 1 + len(forced)
        out = self.model(**inputs, use_cache=False, logits_to_keep=keep)
        return out.logits[:, -keep:, :].float().log_softmax(dim=-1)

    def check_template(self) -> None:
        """Raises ``ValueError`` unless a row built from the shared part of the chat and the separately
        tokenised question equals the processor's tokens for the whole chat (true when the image part
        ends in a special token, as in the Qwen2.5-VL and SmolVLM templates). Cheap: no forward."""
        head, tail = self.template_parts()
        image = torch.full((3, 64, 64), 0.5)
        question = "Does this figure show 'a red cube'? Please answer yes or no."
        shared = self.processor(text=[head], images=[[image]], return_tensors="pt", do_rescale=False)["input_ids"][0]
        row = shared.tolist() + self.tokenizer([question + tail], add_special_tokens=False)["input_ids"][0]
        ref = self.processor(text=[self.chat(question)], images=[[image]], return_tensors="pt", do_rescale=False)[
            "input_ids"
        ][0].tolist()
        if ref != row:
            raise ValueError(
                f"{self.source}: tokenising the question apart from the image part of the chat changes its tokens; "
                "this checkpoint's chat template or tokenizer is not supported by the VLM judges"
            )


def load_judge(
    folder: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    max_image_size: int = 448,
) -> VLMJudge:
    """Loads the model, processor and chat template in ``folder`` offline (safetensors, or
    ``torch.load(weights_only=True)`` for .bin); ``dtype`` "auto" is bfloat16 on CUDA, float32 elsewhere."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    device = torch.device(device)
    torch_dtype = (
        (torch.bfloat16 if device.type == "cuda" else torch.float32) if dtype == "auto" else parse_dtype(dtype)
    )
    folder = Path(folder)
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    try:
        model, info = AutoModelForImageTextToText.from_pretrained(
            str(folder), local_files_only=True, dtype=torch_dtype, output_loading_info=True
        )
    except pickle.UnpicklingError as err:  # a .bin with pickled code or objects: refused
        raise unreadable_error(folder, err) from err
    except ValueError as err:
        raise ValueError(
            f"{folder}: model type {config.model_type!r} is not an image-text-to-text model that "
            f"transformers can load ({err}); pass a Qwen2.5-VL, SmolVLM or Idefics3 folder"
        ) from err
    missing = list(info.get("missing_keys", []))
    mismatched = [str(m[0]) if isinstance(m, tuple) else str(m) for m in info.get("mismatched_keys", [])]
    if missing or mismatched:
        raise ValueError(
            f"checkpoint {str(folder)!r} does not match its config: missing {missing[:5]}, "
            f"mis-shaped {mismatched[:5]}; pass a complete checkpoint folder"
        )
    processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    if not getattr(processor, "chat_template", None):
        raise ValueError(
            f"{folder} has no chat template (chat_template.json or in the tokenizer config); "
            "the judge asks its questions through the model's own template"
        )
    processor.tokenizer.padding_side = "left"
    family = "qwen" if config.model_type in QWEN_TYPES else "generic"
    model = model.to(device).eval().requires_grad_(False)
    judge = VLMJudge(model, processor, family, device, torch_dtype, int(max_image_size), str(folder))
    judge.check_template()
    return judge
