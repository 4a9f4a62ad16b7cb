"""Verifier throughput: noisesearch's batched verifiers vs the reference call patterns.

Each verifier is built with random weights at a reduced width (CPU-sized; the real models are
ViT-H/ViT-L, see the printed configs), written to disk in its official checkpoint layout and
loaded through noisesearch's loader. Side by side in one run, on the same 16 images (512x512,
float in [0, 1]) and 4 prompts x 4 candidates, as in a search step:

* ``batched``: one ``verifier.score(images, prompts)`` call (text embeddings computed once per
  prompt; the prompt cache is cleared before every timed call);
* ``reference``: what the reference code does, on the same weights, called once per image as a
  search loop that scores each candidate as it comes out (``--reference-per-prompt``: one call per
  prompt with its 4 images, which the reference APIs also accept). Inside a call, images are
  converted to PIL and preprocessed and encoded one at a time:
  - hpsv2: ``hpsv2.score(images, prompt)``: ``torch.load`` + ``load_state_dict`` of the checkpoint
    on every call, then per image: transform, tokenize, ``model(image, text)``;
  - imagereward: ``ImageReward.score(prompt, images)`` (``inference_rank``): tokenize once, then per
    image: ViT, cross-attending BERT; then the MLP over the collected features;
  - pickscore: the README's ``calc_probs(prompt, images)`` (processor, get_*_features, logit);
  - aesthetic: ``simple_inference.py`` per image (clip preprocess, encode_image, normalise, MLP);
  - vqascore / vlm-grader: the same verifier called once per image (one forward per image, or per
    image x aspect row batch for the grader); max|Δscore| is then the batch-invariance error.

Both paths run under ``torch.no_grad``; scores are checked to agree (up to 8-bit PIL rounding).
The last line is ``RESULT hpsv2=<x> imagereward=<y> pickscore=<z> aesthetic=<w> vqascore=<v>
vlm-grader=<g>``: time ratios reference / batched (higher is better).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms.functional import to_pil_image

CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
PROMPTS = [
    "a red sports car parked on a wet street at night",
    "a watercolor painting of a lighthouse on a cliff",
    "two cats sleeping on a blue sofa",
    "an astronaut riding a horse on the moon, highly detailed",
]


def timed(fn: Callable[[], object], repeats: int, device: str) -> tuple[float, object]:
    """Fastest wall time of ``repeats`` calls after one warm-up (the least disturbed by other load on
    the machine), and the last result."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    out = fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times), out


def calls(prompts: list[str], per_prompt: bool) -> list[tuple[str, list[int]]]:
    """The reference API calls: (prompt, indices of its images) -- one call per image, as a search
    loop that scores each candidate as it comes out, or one per prompt with all its images."""
    if not per_prompt:
        return [(p, [i]) for i, p in enumerate(prompts)]
    out: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        out.setdefault(p, []).append(i)
    return list(out.items())


def clip_transform(size: int) -> T.Compose:
    """``clip.load`` / ImageReward's PIL transform."""
    return T.Compose(
        [
            T.Resize(size, interpolation=InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def open_clip_config(d: Path, name: str, width: int, layers: int, embed: int) -> str:
    import open_clip

    cfg = {
        "embed_dim": embed,
        "vision_cfg": {"image_size": 224, "layers": layers, "width": width, "head_width": 64, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": width, "heads": width // 64, "layers": layers},
    }
    (d / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d / f"{name}.json")
    return f"open_clip ViT (patch 14, 224px) + text tower, width {width}, {layers} layers, embed {embed}"


# --- HPSv2 -----------------------------------------------------------------------------------------
def bench_hps(d: Path, images: torch.Tensor, prompts: list[str], args) -> tuple[float, float, float, str]:
    import open_clip

    from noisesearch.verifiers.hps import load_hps

    desc = open_clip_config(d, "bench-hps", args.width, args.layers, args.width)
    torch.manual_seed(0)
    model = open_clip.create_model("bench-hps").eval()
    dev = args.device
    ckpt = d / "HPS_v2_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    v = load_hps("v2.0", ckpt, dev, model="bench-hps")
    tok = open_clip.get_tokenizer("bench-hps")
    ref_model = open_clip.create_model("bench-hps").to(dev).eval()  # hpsv2 builds its model once per process

    def resize_max(x: torch.Tensor, size: int = 224) -> torch.Tensor:  # hpsv2's ResizeMaxSize on a tensor
        h, w = x.shape[1:]
        scale = size / float(max(h, w))
        if scale != 1.0:
            new = tuple(round(dim * scale) for dim in (h, w))
            x = T.functional.resize(x, list(new), InterpolationMode.BICUBIC)
            x = T.functional.pad(
                x,
                [
                    (size - new[1]) // 2,
                    (size - new[0]) // 2,
                    size - new[1] - (size - new[1]) // 2,
                    size - new[0] - (size - new[0]) // 2,
                ],
            )
        return x

    preprocess_val = T.Compose([T.ToTensor(), resize_max, T.Normalize(CLIP_MEAN, CLIP_STD)])

    def reference() -> torch.Tensor:
        out = torch.empty(len(prompts))
        for p, idx in calls(prompts, args.reference_per_prompt):  # hpsv2.score(img_list, prompt)
            state = torch.load(ckpt, map_location=dev, weights_only=True)  # reloaded on every call
            ref_model.load_state_dict(state["state_dict"])
            for i in idx:
                x = preprocess_val(to_pil_image(images[i].cpu())).unsqueeze(0).to(dev)
                feats = ref_model(x, tok([p]).to(dev))
                f_img, f_txt = (
                    (feats["image_features"], feats["text_features"]) if isinstance(feats, dict) else feats[:2]
                )
                out[i] = torch.diagonal(f_img @ f_txt.T)[0].cpu()
        return out

    def batched() -> torch.Tensor:
        v.clear_cache()
        return v.score(images, prompts)

    return *compare(batched, reference, prompts, args), desc


# --- ImageReward -----------------------------------------------------------------------------------
def bench_imagereward(d: Path, images: torch.Tensor, prompts: list[str], args) -> tuple[float, float, float, str]:
    from noisesearch.verifiers.imagereward import (
        REWARD_MEAN,
        REWARD_STD,
        BlipTextConfig,
        BlipVisionConfig,
        ImageRewardModel,
        load_imagereward,
    )

    words = sorted({w for p in prompts for w in p.replace(",", " ,").split()})
    (d / "bert").mkdir()
    (d / "bert" / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    vision = BlipVisionConfig(
        image_size=224, patch_size=16, width=args.width, layers=args.layers, heads=args.width // 64
    )
    text = BlipTextConfig(
        vocab_size=len(words) + 7,
        hidden_size=args.width,
        num_hidden_layers=args.layers,
        num_attention_heads=args.width // 64,
        intermediate_size=4 * args.width,
    )
    torch.manual_seed(0)
    sd = ImageRewardModel(vision, text).state_dict()
    sd |= {
        "blip.vision_proj.weight": torch.zeros(256, args.width),
        "blip.vision_proj.bias": torch.zeros(256),
        "blip.text_proj.weight": torch.zeros(256, args.width),
        "blip.text_proj.bias": torch.zeros(256),
    }
    torch.save(sd, d / "ImageReward.pt")
    dev = args.device
    v = load_imagereward(d / "ImageReward.pt", dev, tokenizer=d / "bert", vision=vision, text=text)
    m, preprocess = v.model, clip_transform(224)
    desc = (
        f"BLIP ViT (patch 16, 224px) width {args.width}, {args.layers} layers + BERT with cross-attention "
        f"width {args.width}, {args.layers} layers"
    )

    def reference() -> torch.Tensor:
        out = torch.empty(len(prompts))
        for p, idx in calls(prompts, args.reference_per_prompt):  # ImageReward.score(prompt, images)
            t = v.tokenizer(p, padding="max_length", truncation=True, max_length=35, return_tensors="pt").to(dev)
            feats = []
            for i in idx:
                x = preprocess(to_pil_image(images[i].cpu())).unsqueeze(0).to(dev)
                image_embeds = m.blip.visual_encoder.forward_features(x)
                states = m.blip.text_encoder(t.input_ids, t.attention_mask, image_embeds)
                feats.append(states[:, 0, :])
            rewards = (m.mlp(torch.cat(feats, 0).float()) - REWARD_MEAN) / REWARD_STD
            out[idx] = rewards.squeeze(-1).cpu()
        return out

    return *compare(lambda: v.score(images, prompts), reference, prompts, args), desc


# --- PickScore -------------------------------------------------------------------------------------
def bench_pickscore(d: Path, images: torch.Tensor, prompts: list[str], args) -> tuple[float, float, float, str]:
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    from noisesearch.verifiers.pickscore import load_pickscore

    hf_logging.disable_progress_bar()

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    (d / "raw").mkdir()
    (d / "raw" / "vocab.json").write_text(json.dumps(vocab))
    (d / "raw" / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(d / "raw" / "vocab.json"), str(d / "raw" / "merges.txt")).save_pretrained(str(d / "proc"))
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
        str(d / "proc")
    )
    eos = vocab["<|endoftext|>"]
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=eos + 1,
            hidden_size=args.width,
            intermediate_size=4 * args.width,
            num_hidden_layers=args.layers,
            num_attention_heads=args.width // 64,
            bos_token_id=eos - 1,
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            image_size=224,
            patch_size=14,
            hidden_size=args.width,
            intermediate_size=4 * args.width,
            num_hidden_layers=args.layers,
            num_attention_heads=args.width // 64,
        ),
        projection_dim=args.width,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(str(d / "model"))
    dev = args.device
    v = load_pickscore(d / "model", dev, processor=d / "proc")
    model = CLIPModel.from_pretrained(str(d / "model")).to(dev).eval()
    processor_img = CLIPImageProcessor.from_pretrained(str(d / "proc"))
    tok = AutoTokenizer.from_pretrained(str(d / "proc"))
    feat = lambda out: out if isinstance(out, torch.Tensor) else out.pooler_output  # noqa: E731 (transformers 4 vs 5)
    desc = f"transformers CLIPModel (patch 14, 224px) width {args.width}, {args.layers} layers (byte-level BPE)"

    def calc_probs(prompt: str, pils: list) -> torch.Tensor:  # the PickScore README
        image_inputs = processor_img(images=pils, return_tensors="pt")
        text_inputs = tok(prompt, padding=True, truncation=True, max_length=77, return_tensors="pt").to(dev)
        image_embs = feat(model.get_image_features(pixel_values=image_inputs["pixel_values"].to(dev)))
        image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
        text_embs = feat(model.get_text_features(**text_inputs))
        text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
        return model.logit_scale.exp() * (text_embs @ image_embs.T)[0]

    def reference() -> torch.Tensor:
        out = torch.empty(len(prompts))
        for p, idx in calls(prompts, args.reference_per_prompt):
            out[idx] = calc_probs(p, [to_pil_image(images[i].cpu()) for i in idx]).cpu()
        return out

    def batched() -> torch.Tensor:
        v.clear_cache()
        return v.score(images, prompts)

    return *compare(batched, reference, prompts, args), desc


# --- LAION aesthetic -------------------------------------------------------------------------------
def bench_aesthetic(d: Path, images: torch.Tensor, prompts: list[str], args) -> tuple[float, float, float, str]:
    import open_clip
    from safetensors.torch import save_file

    from noisesearch.verifiers.aesthetic import PreferenceMLP, load_aesthetic

    desc = open_clip_config(d, "bench-aesthetic", args.width, args.layers, args.width) + " + MLP head"
    torch.manual_seed(0)
    model = open_clip.create_model("bench-aesthetic").eval()
    dev = args.device
    save_file({k: t.contiguous() for k, t in model.state_dict().items()}, str(d / "clip.safetensors"))
    head = PreferenceMLP(args.width).eval()
    torch.save(head.state_dict(), d / "sac+logos+ava1-l14-linearMSE.pth")
    v = load_aesthetic(
        d / "sac+logos+ava1-l14-linearMSE.pth",
        dev,
        clip_model="bench-aesthetic",
        clip_pretrained=str(d / "clip.safetensors"),
    )
    model, head = model.to(dev), head.to(dev)
    preprocess = clip_transform(224)

    def reference() -> torch.Tensor:  # simple_inference.py, per image
        out = []
        for img in images:
            emb = model.encode_image(preprocess(to_pil_image(img.cpu())).unsqueeze(0).to(dev))
            emb = F.normalize(emb, dim=-1)
            out.append(head(emb)[:, 0])
        return torch.cat(out)

    return *compare(lambda: v.score(images, prompts), reference, prompts, args), desc


# --- VLM judges: VQAScore and the rubric grader ---------------------------------------------------
def _vlm_folder(d: Path, args) -> tuple[Path, str]:
    from noisesearch.testing.vlm_tiny import build_tiny_idefics3, build_tiny_qwen2_5_vl

    side = args.vlm_image_size
    if args.vlm_family == "qwen2_5_vl":
        folder = build_tiny_qwen2_5_vl(d / "vlm", width=args.width, layers=args.layers, max_pixels=side * side)
        merged = (side // 28) ** 2
        desc = f"Qwen2.5-VL random, width {args.width}, {args.layers}+{args.layers} layers, {side}px -> {merged} image tokens"
    else:
        folder = build_tiny_idefics3(d / "vlm", width=args.width, layers=args.layers, tile=side // 2)
        desc = f"Idefics3 random, width {args.width}, {args.layers}+{args.layers} layers, 4 tiles of {side // 2}px + global"
    return folder, desc


def _vlm_bench(name: str, options: dict) -> Callable:
    """Batched: one ``score`` call over all images (one forward over every row); reference: the same
    verifier called once per image, as a search loop scoring each candidate as it comes out (the
    community graders also generate their answers, which costs more forwards still: see the README)."""

    def bench(d: Path, images: torch.Tensor, prompts: list[str], args) -> tuple[float, float, float, str]:
        from noisesearch.verifiers.base import load_verifier

        folder, desc = _vlm_folder(d, args)
        dtype = "float32" if args.device == "cpu" else "auto"  # auto: bf16 on CUDA
        v = load_verifier(
            name, args.device, model=str(folder), dtype=dtype, max_image_size=args.vlm_image_size, **options
        )

        def reference() -> torch.Tensor:
            return torch.cat([v.score(images[i : i + 1], prompts[i : i + 1]) for i in range(len(prompts))])

        if args.vlm_generate_tokens and name == "vlm-grader":
            _time_generation(v.judge, images, prompts, args)
        return *compare(lambda: v.score(images, prompts), reference, prompts, args), desc

    return bench


def _time_generation(judge, images: torch.Tensor, prompts: list[str], args) -> None:
    """The generate-and-parse pattern on the same judge: per image, one chat asking for the whole
    rubric and ``--vlm-generate-tokens`` greedy new tokens (tt-scale-flux allows up to 800)."""
    from noisesearch.verifiers.vlm_model import resize_longest

    n = args.vlm_generate_tokens
    t0 = time.perf_counter()
    for i, p in enumerate(prompts):
        x = resize_longest(images[i : i + 1].float(), judge.max_image_size)[0]
        chat = judge.chat(f"Rate this image for the prompt '{p}' on five aspects, 0 to 10, as JSON.")
        inputs = judge.processor(text=[chat], images=[[x]], return_tensors="pt", do_rescale=False).to(judge.device)
        judge.model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    dt = time.perf_counter() - t0
    print(
        f"{'  generate':12s} {n} new tokens per image, one image at a time: {dt:7.3f} s   "
        f"{1000 * dt / len(prompts):7.1f} ms/image",
        flush=True,
    )


def compare(batched: Callable, reference: Callable, prompts: list[str], args) -> tuple[float, float, float]:
    """(batched seconds, reference seconds, max |difference| of the scores in the prompts' order)."""
    t_b, s_b = timed(batched, args.repeats, args.device)
    t_r, s_r = timed(reference, args.repeats, args.device)
    return t_b, t_r, float((s_b.cpu() - s_r.cpu()).abs().max())


BENCHES = {
    "hpsv2": bench_hps,
    "imagereward": bench_imagereward,
    "pickscore": bench_pickscore,
    "aesthetic": bench_aesthetic,
    "vqascore": _vlm_bench("vqascore", {}),
    "vlm-grader": _vlm_bench("vlm-grader", {}),
}


def main() -> None:
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly" notes: random by design
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="width 128, 2 layers, 1 timed repeat")
    parser.add_argument("--width", type=int, default=256, help="token width of every tower (real: 768-1280)")
    parser.add_argument("--layers", type=int, default=4, help="layers of every tower (real: 12-32)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=512, help="input image side, pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (fastest counts)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the CUDA path is untested here)")
    parser.add_argument("--only", choices=sorted(BENCHES), action="append", help="run only these verifiers")
    parser.add_argument(
        "--reference-per-prompt",
        action="store_true",
        help="reference APIs get each prompt's images in one call (default: one call per image)",
    )
    parser.add_argument(
        "--vlm-family",
        choices=("qwen2_5_vl", "idefics3"),
        default="qwen2_5_vl",
        help="architecture of the random VLM judge (vqascore, vlm-grader)",
    )
    parser.add_argument(
        "--vlm-generate-tokens",
        type=int,
        default=0,
        help="also time the generate-and-parse pattern with this many new tokens per image (0: skip)",
    )
    parser.add_argument(
        "--vlm-image-size",
        type=int,
        default=448,
        help="longest image side fed to the VLM judge (the max_image_size option)",
    )
    args = parser.parse_args()
    if args.quick:
        args.width, args.layers, args.repeats = 128, 2, 1
    if args.width % 64:
        parser.error("--width must be a multiple of 64 (head width 64)")
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.images, 3, args.size, args.size, generator=g).to(args.device)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    print(
        f"{args.images} images {args.size}x{args.size}, {len(set(prompts))} prompts, CPU threads {args.threads}, "
        f"random weights at REDUCED width {args.width} / {args.layers} layers (real models are ViT-L/H)"
    )
    ratios = {}
    for name in args.only or list(BENCHES):
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
            t_b, t_r, diff, desc = BENCHES[name](Path(tmp), images, prompts, args)
        ratios[name] = t_r / t_b
        print(
            f"{name:12s} batched {t_b:7.3f} s   reference {t_r:7.3f} s   ratio {ratios[name]:5.2f}x   "
            f"max|Δscore| {diff:.2e}   {1000 * t_b / args.images:7.1f} ms/image batched   [{desc}]",
            flush=True,
        )
    print("RESULT " + " ".join(f"{n}={ratios[n]:.2f}" for n in BENCHES if n in ratios))


if __name__ == "__main__":
    main()
