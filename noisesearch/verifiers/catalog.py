"""What each checkpoint-backed verifier needs and where it looks for it offline.

The file specs here are the single source for the verifier loaders and for listings of what is
found locally and what is missing (``noisesearch verifiers``). :func:`scan` only looks at the disk;
it imports no model code and never touches the network.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from noisesearch.io.checkpoints import HubFile, HubFolder, find_file, find_folder

Spec = HubFile | HubFolder

# --- HPSv2 / v2.1 (Wu et al. 2023) ----------------------------------------------------------------
HPSV2 = HubFile(
    "HPS_v2_compressed.pt", ("xswu/HPSv2",), "NOISESEARCH_HPSV2_PATH", legacy_dirs=("$HPS_ROOT|~/.cache/hpsv2",)
)
HPSV21 = HubFile(
    "HPS_v2.1_compressed.pt", ("xswu/HPSv2",), "NOISESEARCH_HPSV21_PATH", legacy_dirs=("$HPS_ROOT|~/.cache/hpsv2",)
)

# --- ImageReward (Xu et al. 2023) -------------------------------------------------------------------
IMAGEREWARD = HubFile(
    "ImageReward.pt", ("THUDM/ImageReward",), "NOISESEARCH_IMAGEREWARD_PATH", legacy_dirs=("~/.cache/ImageReward",)
)
#: optional: BLIP's text-encoder config; the loader falls back to its known values
IMAGEREWARD_MED_CONFIG = HubFile(
    "med_config.json",
    ("THUDM/ImageReward",),
    "NOISESEARCH_IMAGEREWARD_MED_CONFIG",
    option="med_config",
    legacy_dirs=("~/.cache/ImageReward",),
)
BERT_TOKENIZER = HubFolder(
    ("google-bert/bert-base-uncased", "bert-base-uncased"),
    ("vocab.txt",),
    "NOISESEARCH_BERT_TOKENIZER_PATH",
    option="tokenizer",
)

# --- PickScore (Kirstain et al. 2023) ---------------------------------------------------------------
PICKSCORE = HubFolder(
    ("yuvalkirstain/PickScore_v1",),
    ("config.json",),
    "NOISESEARCH_PICKSCORE_PATH",
    option="path",
    any_of=("model.safetensors", "pytorch_model.bin"),
)
PICKSCORE_PROCESSOR = HubFolder(
    ("laion/CLIP-ViT-H-14-laion2B-s32B-b79K",),
    ("preprocessor_config.json",),
    "NOISESEARCH_PICKSCORE_PROCESSOR_PATH",
    option="processor",
    any_of=("tokenizer.json", "vocab.json"),
)

# --- LAION aesthetic predictor v2 (Schuhmann 2022) --------------------------------------------------
AESTHETIC = HubFile(
    "sac+logos+ava1-l14-linearMSE.pth",
    (),
    "NOISESEARCH_AESTHETIC_PATH",
    # ImageReward's load_score("Aesthetic") downloads the same file there
    legacy_dirs=("~/.cache/ImageReward",),
    source_url="https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/sac%2Blogos%2Bava1-l14-linearMSE.pth",
)
#: the same head, republished on the hub by TRL for its DDPO example
AESTHETIC_TRL = HubFile("aesthetic-model.pth", ("trl-lib/ddpo-aesthetic-predictor",), "NOISESEARCH_AESTHETIC_PATH")
#: OpenAI CLIP ViT-L/14 as open_clip reads it (tag "openai"), the aesthetic predictor's CLIP
CLIP_VIT_L14_OPENAI = HubFolder(
    ("timm/vit_large_patch14_clip_224.openai",),
    (),
    "",
    option="clip_pretrained",
    any_of=("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
)

# --- CLIPScore (Hessel et al. 2021) ------------------------------------------------------------------
#: the same weights as CLIPScore's default model (ViT-L-14/openai), taken by its ``pretrained`` option
CLIPSCORE_DEFAULT = HubFolder(
    CLIP_VIT_L14_OPENAI.hub_ids,
    (),
    "",
    option="pretrained",
    any_of=CLIP_VIT_L14_OPENAI.any_of,
)

# --- vision-language judges: VQAScore (Lin et al. 2024), the LLM grader (Ma et al. 2025) -----------
_VLM_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
QWEN25_VL_3B = HubFolder(
    ("Qwen/Qwen2.5-VL-3B-Instruct",), ("config.json",), "NOISESEARCH_VLM_PATH", option="model", any_of=_VLM_WEIGHTS
)
QWEN25_VL_7B = HubFolder(
    ("Qwen/Qwen2.5-VL-7B-Instruct",), ("config.json",), "NOISESEARCH_VLM_PATH", option="model", any_of=_VLM_WEIGHTS
)
#: the judge used when no model= option is given: the first of these found offline
VLM_DEFAULTS = (QWEN25_VL_3B, QWEN25_VL_7B)


@dataclass(frozen=True)
class VerifierEntry:
    """One checkpoint-backed verifier: its registry name and the files it needs."""

    #: name in the verifier registry
    name: str
    #: one line for listings
    summary: str
    #: the paper that defines the score
    paper: str
    #: module whose import registers the verifier
    module: str
    #: groups of alternatives; each group needs one of its specs present
    needs: tuple[tuple[Spec, ...], ...]
    #: files used when present, with a built-in fallback otherwise
    optional: tuple[Spec, ...] = ()


CATALOG: tuple[VerifierEntry, ...] = (
    VerifierEntry(
        "clipscore",
        "CLIPScore: 2.5·max(cos, 0) on open_clip ViT-L-14/openai (other models: options model=, pretrained=)",
        "Hessel et al. 2021, arXiv:2104.08718",
        "noisesearch.verifiers.clip",
        ((CLIPSCORE_DEFAULT,),),
    ),
    VerifierEntry(
        "hpsv2",
        "HPSv2: cosine of an open_clip ViT-H-14 fine-tuned on human preferences",
        "Wu et al. 2023, arXiv:2306.09341",
        "noisesearch.verifiers.hps",
        ((HPSV2,),),
    ),
    VerifierEntry(
        "hpsv2.1",
        "HPSv2.1: HPSv2 retrained on more data (same architecture)",
        "Wu et al. 2023, arXiv:2306.09341",
        "noisesearch.verifiers.hps",
        ((HPSV21,),),
    ),
    VerifierEntry(
        "imagereward",
        "ImageReward: BLIP ViT-L + BERT cross-attention + MLP reward head",
        "Xu et al. 2023, arXiv:2304.05977",
        "noisesearch.verifiers.imagereward",
        ((IMAGEREWARD,), (BERT_TOKENIZER,)),
        optional=(IMAGEREWARD_MED_CONFIG,),
    ),
    VerifierEntry(
        "pickscore",
        "PickScore: CLIP-H fine-tuned on Pick-a-Pic, logit_scale·cosine",
        "Kirstain et al. 2023, arXiv:2305.01569",
        "noisesearch.verifiers.pickscore",
        ((PICKSCORE,), (PICKSCORE_PROCESSOR,)),
    ),
    VerifierEntry(
        "aesthetic",
        "LAION aesthetic predictor v2: MLP on CLIP ViT-L/14 image embeddings",
        "Schuhmann 2022, github.com/christophschuhmann/improved-aesthetic-predictor",
        "noisesearch.verifiers.aesthetic",
        ((AESTHETIC, AESTHETIC_TRL), (CLIP_VIT_L14_OPENAI,)),
    ),
    VerifierEntry(
        "vqascore",
        "VQAScore: log P(yes) of a vision-language model asked if the image shows the prompt",
        "Lin et al. 2024, arXiv:2404.01291",
        "noisesearch.verifiers.vlm",
        (VLM_DEFAULTS,),
    ),
    VerifierEntry(
        "vlm-grader",
        "LLM-grader rubric (5 aspects, 0-10) as expected values over a VLM's number tokens",
        "Ma et al. 2025, arXiv:2501.09732",
        "noisesearch.verifiers.vlm",
        (VLM_DEFAULTS,),
    ),
)


def register_all() -> None:
    """Imports every catalogued verifier module, which registers its verifiers."""
    for module in dict.fromkeys(entry.module for entry in CATALOG):
        importlib.import_module(module)


@dataclass(frozen=True)
class Availability:
    """What :func:`scan` found for one verifier."""

    name: str
    #: description of each found file/folder -> its local path
    found: dict[str, Path]
    #: one line per missing requirement, with the hub id or URL and how to point at a local copy
    missing: tuple[str, ...]

    @property
    def ready(self) -> bool:
        return not self.missing


def describe(spec: Spec) -> str:
    """A short name for a spec: 'repo/file' or 'repo/'."""
    if isinstance(spec, HubFile):
        return f"{spec.hub_ids[0]}/{spec.filename}" if spec.hub_ids else spec.filename
    return f"{spec.hub_ids[0]}/"


def _locate(spec: Spec, cache_dir: str | os.PathLike | None) -> Path | None:
    return find_file(spec, cache_dir) if isinstance(spec, HubFile) else find_folder(spec, cache_dir)


def _how_to_get(spec: Spec) -> str:
    env = f" or env {spec.env_var}" if spec.env_var else ""
    return f"{describe(spec)} ({spec.fetch_hint()}; or option {spec.option}=PATH{env})"


def scan(cache_dir: str | os.PathLike | None = None) -> list[Availability]:
    """For every catalogued verifier, which of its files are found locally and which are missing."""
    out = []
    for entry in CATALOG:
        found: dict[str, Path] = {}
        missing: list[str] = []
        for group in entry.needs:
            hits = [(s, p) for s in group if (p := _locate(s, cache_dir)) is not None]
            if hits:
                found[describe(hits[0][0])] = hits[0][1]
            else:
                missing.append(" or ".join(_how_to_get(s) for s in group))
        for spec in entry.optional:
            p = _locate(spec, cache_dir)
            if p is not None:
                found[describe(spec)] = p
        out.append(Availability(entry.name, found, tuple(missing)))
    return out
