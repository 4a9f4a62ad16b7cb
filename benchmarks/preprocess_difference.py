"""How far each verifier's default float preprocessing is from the reference's 8-bit one.

The verifiers preprocess in float by default (batched, differentiable: gradient search needs it);
``preprocess="official"`` reproduces the reference transform exactly (Pillow's 8-bit bicubic resize
for CLIP, the aesthetic predictor, ImageReward and PickScore; HPSv2 resizes a float tensor already,
so on 8-bit images its two modes are identical). This prints, per verifier and image size, the
difference between the two modes on the same 8-bit images:

* pixels: max and mean |float - official| of the preprocessed image in [0, 1] units;
* score: max |float - official| of the score (CLIPScore: of 2.5·cos, before the clamp at 0), with
  the full-size architectures at random weights
  (open_clip ViT-L-14 with QuickGELU for CLIPScore and the aesthetic predictor, BLIP ViT-L/16 +
  BERT for ImageReward, CLIP ViT-H/14 for PickScore; real weights will differ in size but not in
  kind). ``--no-scores`` skips them (pixels only, a few seconds).

Images: ``--images`` per size, smooth random fields (bilinear upsampling of 8×8 noise) plus 8-bit
noise of amplitude 8/255, like a decoded generation's texture, rounded to 8 bits as saved files are.

    python benchmarks/preprocess_difference.py [--sizes 1024x1024,512x512,480x640,96x128] [--images 4] [--no-scores]

The last line is ``RESULT`` with the largest score difference per verifier.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from noisesearch.verifiers.clip import CLIPScoreVerifier
from noisesearch.verifiers.transforms import CLIP_MEAN, CLIP_STD


def images_8bit(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    """[n, 3, h, w] in [0, 1], multiples of 1/255: smooth colour fields with fine texture."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(h, w), mode="bilinear", align_corners=False)
    texture = (torch.rand(n, 3, h, w, generator=g) - 0.5) * (16 / 255)
    return ((base + texture).clamp(0, 1) * 255).round() / 255


def pixels(preprocess, images: torch.Tensor) -> torch.Tensor:
    """Preprocessed images back in [0, 1] units (undo the CLIP normalisation)."""
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return preprocess(images) * std + mean


def both_modes(verifier, images: torch.Tensor, score) -> tuple[float, float, float | None]:
    out = {}
    for mode in ("float", "official"):
        verifier.preprocess_mode = mode
        with torch.no_grad():
            out[mode] = (pixels(verifier.preprocess, images), score(images) if score else None)
    d = (out["float"][0] - out["official"][0]).abs()
    ds = None if score is None else float((out["float"][1] - out["official"][1]).abs().max())
    return float(d.max()), float(d.mean()), ds


def build(name: str, scores: bool):
    """(verifier whose preprocess is measured, score function or None)."""
    torch.manual_seed(0)
    if name in ("clipscore", "aesthetic"):
        if not scores:
            return CLIPScoreVerifier(torch.nn.Linear(1, 1), lambda p: p, 224, CLIP_MEAN, CLIP_STD), None
        v = CLIPScoreVerifier.from_open_clip("ViT-L-14", None, quick_gelu=True)
        if name == "clipscore":
            text = v.encode_texts(["a photograph of a cat"])
            # 2.5·cos before the max(·, 0): random weights often give negative cosines, which the clamp hides
            return v, lambda x: 2.5 * (v.encode_images(x) @ text[0])
        from noisesearch.verifiers.aesthetic import AestheticVerifier, PreferenceMLP

        a = AestheticVerifier(v, PreferenceMLP(768).eval())
        return v, lambda x: a.score(x, [""] * x.shape[0])
    if name == "imagereward":
        from noisesearch.verifiers.imagereward import ImageRewardModel, ImageRewardVerifier

        model = ImageRewardModel().eval() if scores else None
        if model is None:
            from types import SimpleNamespace

            model = SimpleNamespace(vision_config=SimpleNamespace(image_size=224))
        v = ImageRewardVerifier(model, tokenizer=None)
        if not scores:
            return v, None
        ids = torch.randint(1000, 30000, (1, 35), generator=torch.Generator().manual_seed(1))
        mask = torch.ones_like(ids)
        return v, lambda x: model(v.preprocess(x), ids.expand(x.shape[0], -1), mask.expand(x.shape[0], -1))
    if name == "pickscore":
        from noisesearch.verifiers.pickscore import CLIPTowers, PickScoreVerifier

        if not scores:
            return PickScoreVerifier(
                torch.nn.Linear(1, 1), lambda p: p, 224, CLIP_MEAN, CLIP_STD, crop="transformers"
            ), None
        from transformers import CLIPConfig, CLIPModel

        cfg = CLIPConfig(  # laion/CLIP-ViT-H-14-laion2B-s32B-b79K's shapes, as PickScore_v1
            text_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24),
            vision_config=dict(
                hidden_size=1280,
                intermediate_size=5120,
                num_attention_heads=16,
                num_hidden_layers=32,
                patch_size=14,
                image_size=224,
            ),
            projection_dim=1024,
        )
        towers = CLIPTowers(CLIPModel(cfg).eval())
        ids = torch.randint(1000, 40000, (1, 77), generator=torch.Generator().manual_seed(1))
        v = PickScoreVerifier(
            towers, lambda prompts: ids.expand(len(prompts), -1), 224, CLIP_MEAN, CLIP_STD, crop="transformers"
        )
        return v, lambda x: v.score(x, ["p"] * x.shape[0])
    raise ValueError(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024x1024,512x512,480x640,96x128", help="HxW,HxW,...")
    ap.add_argument("--images", type=int, default=4, help="images per size")
    ap.add_argument("--verifiers", default="clipscore,aesthetic,imagereward,pickscore")
    ap.add_argument("--no-scores", action="store_true", help="pixel differences only (no models built)")
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    worst: dict[str, float] = {}
    print(f"{'verifier':12s} {'size':>10s} {'max |dpix|':>11s} {'mean |dpix|':>12s} {'max |dscore|':>13s}")
    for name in args.verifiers.split(","):
        t0 = time.time()
        verifier, score = build(name, not args.no_scores)
        for k, (h, w) in enumerate(sizes):
            imgs = images_8bit(args.images, h, w, seed=k)
            dmax, dmean, ds = both_modes(verifier, imgs, score)
            worst[name] = max(worst.get(name, 0.0), ds or 0.0)
            print(
                f"{name:12s} {f'{h}x{w}':>10s} {dmax:11.2e} {dmean:12.2e} {'-' if ds is None else f'{ds:.2e}':>13s}",
                flush=True,
            )
        print(f"# {name}: {time.time() - t0:.0f} s")
    print("hpsv2/hpsv2.1: both modes identical on 8-bit images (the reference resizes ToTensor's float output)")
    print("RESULT " + " ".join(f"{k}={v:.2e}" for k, v in worst.items()))


if __name__ == "__main__":
    main()
