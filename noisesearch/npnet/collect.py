"""Noise prompt dataset (NPD) collection by re-denoise sampling (Zhou et al. 2024, Sec. 3.2).

For each (prompt, seed): take the standard noise ``x_T``, make one DDIM step at a high guidance
``ω_l`` and invert it back to ``T`` with one DDIM-inversion step at a low guidance ``ω_w``; the
result ``x'_T`` carries some of the prompt's semantics. Both noises are sampled to images with the
model's usual settings and scored by a verifier; the pair ``(x_T, x'_T)`` is kept when the image
from ``x'_T`` wins by more than the margin ``m``. Everything is batched through the denoising core.

Layout of the output folder::

    collect.json              settings, model, verifier and the full prompt list
    shards/shard-00000.safetensors   kept pairs of work unit block 0: noise, golden, prompt_id, scores
    manifest.jsonl            one line per finished shard (written after its file)

Work is a fixed list of (prompt, seed) units cut into shards of ``shard_size``; a shard's file is
written atomically before its manifest line (one fsync'd append). A rerun with the same folder
skips shards already in the manifest, so an interrupted collection resumes with no lost or
duplicated pairs; a shard file without its manifest line is recomputed and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from noisesearch.accounting import Meter
from noisesearch.core.adapter import ModelAdapter
from noisesearch.core.sampler import CoreConfig, DenoisingCore, Trajectory
from noisesearch.io.storage import append_row, read_jsonl, truncate_torn_tail, write_atomic
from noisesearch.verifiers.base import Verifier, check_scores

SETTINGS_FILE = "collect.json"
MANIFEST_FILE = "manifest.jsonl"
SHARDS_DIR = "shards"


@dataclass(frozen=True)
class CollectConfig:
    """Re-denoise sampling settings; defaults from Zhou et al. 2024 (and their code: margin 0)."""

    guidance_high: float = 5.5  # ω_l, guidance of the DDIM step from x_T
    guidance_low: float = 1.0  # ω_w, guidance of the DDIM inversion step back to T
    margin: float = 0.0  # m, keep a pair when score(x'_T image) - score(x_T image) > m (-inf: keep all)
    pairs_per_prompt: int = 4  # seeds per prompt
    shard_size: int = 64  # (prompt, seed) units per shard (also the batch of one core call)
    seed: int = 0  # unit k = (prompt k // pairs_per_prompt, seed + k)

    def __post_init__(self) -> None:
        if not (self.guidance_high >= 0 and self.guidance_low >= 0):
            raise ValueError("guidances must be >= 0")
        if math.isnan(self.margin) or self.margin == math.inf:
            raise ValueError(f"margin must be a number below +inf (-inf keeps every pair), got {self.margin!r}")
        for name in ("pairs_per_prompt", "shard_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")


@dataclass
class CollectSummary:
    out_dir: Path
    shards_total: int
    shards_done: int  # including those found done on disk
    shards_computed: int  # in this call
    units: int  # (prompt, seed) pairs tried in this call
    kept: int  # pairs kept in this call
    nfe: int  # NFEs spent in this call
    seconds: float

    @property
    def complete(self) -> bool:
        return self.shards_done == self.shards_total


def _prompts_digest(prompts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()[:16]


def re_denoise_cores(
    adapter: ModelAdapter, core_config: CoreConfig, config: CollectConfig, meter: Meter
) -> tuple[DenoisingCore, DenoisingCore]:
    """DDIM cores at guidance ``ω_l`` (the step) and ``ω_w`` (the inversion), sharing ``meter``."""
    high = DenoisingCore(adapter, replace(core_config, solver="ddim", guidance=config.guidance_high), meter=meter)
    low = DenoisingCore(adapter, replace(core_config, solver="ddim", guidance=config.guidance_low), meter=meter)
    return high, low


def re_denoise(
    high: DenoisingCore, low: DenoisingCore, noise: torch.Tensor, prompts: Sequence[str], seeds: Sequence[int]
) -> torch.Tensor:
    """``x'_T`` for each standard noise: one DDIM step on ``high``, one DDIM inversion on ``low``
    (cores from :func:`re_denoise_cores`, built once so each prompt is encoded once)."""
    stepped = high.run(high.start(noise, prompts, seeds), until=1)
    at_t1 = Trajectory(x=stepped.x, step=1, prompt_index=low.prompt_indices(prompts), seeds=list(seeds))
    return low.invert(at_t1, to_step=0).x / low.schedule.init_scale


def _score(verifier: Verifier, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    with torch.no_grad():
        scores = check_scores(verifier.score(images, list(prompts)), len(prompts), verifier.name).float().cpu()
    return scores.masked_fill(~torch.isfinite(scores), -math.inf)


def collect(
    adapter: ModelAdapter,
    prompts: Sequence[str],
    verifier: Verifier,
    out_dir: str | Path,
    config: CollectConfig = CollectConfig(),
    core_config: CoreConfig = CoreConfig(),
    max_shards: int | None = None,
    on_shard: Callable[[int, int, int], None] | None = None,
) -> CollectSummary:
    """Collects (or resumes) an NPD in ``out_dir``; ``max_shards`` stops after that many new shards.

    ``on_shard(done, total, kept_in_shard)`` is called after each shard is safely on disk.
    """
    prompts = [p.strip() for p in prompts]
    if not prompts or any(not p for p in prompts):
        raise ValueError("NPD collection needs a non-empty list of non-empty prompts")
    out = Path(out_dir)
    (out / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    settings = {
        "collect": asdict(config),
        "sampling": {k: v for k, v in asdict(core_config).items() if k != "max_batch"},
        "model": adapter.info.name,
        "verifier": verifier.name,
        "prompts_sha256": _prompts_digest(prompts),
    }
    settings_path = out / SETTINGS_FILE
    if settings_path.exists():
        previous = json.loads(settings_path.read_text())
        old = {k: previous.get(k) for k in settings}
        if old != settings:
            changed = sorted(k for k in settings if old.get(k) != settings[k])
            raise ValueError(
                f"{out} holds a collection made with different {', '.join(changed)}; "
                "use a new --out folder or the same settings to resume"
            )
    else:
        write_atomic(settings_path, (json.dumps({**settings, "prompts": prompts}, indent=2) + "\n").encode())

    manifest = out / MANIFEST_FILE
    truncate_torn_tail(manifest)
    done = {int(r["shard"]) for r in read_jsonl(manifest, required_key="shard")} if manifest.exists() else set()
    units = len(prompts) * config.pairs_per_prompt
    total = math.ceil(units / config.shard_size)
    meter = Meter(device=adapter.device)
    sample_core = DenoisingCore(adapter, core_config, meter=meter)
    high, low = re_denoise_cores(adapter, core_config, config, meter)
    start_time = time.perf_counter()
    computed = tried = kept_total = 0
    for shard in range(total):
        if shard in done:
            continue
        if max_shards is not None and computed >= max_shards:
            break
        lo, hi = shard * config.shard_size, min(units, (shard + 1) * config.shard_size)
        prompt_ids = [k // config.pairs_per_prompt for k in range(lo, hi)]
        seeds = [config.seed + k for k in range(lo, hi)]
        texts = [prompts[i] for i in prompt_ids]
        noise = sample_core.initial_noise(seeds)
        golden = re_denoise(high, low, noise, texts, seeds)
        images = sample_core.decode(
            sample_core.run(sample_core.start(torch.cat([noise, golden]), texts * 2, seeds * 2)).x
        )
        scores = _score(verifier, images, texts * 2)
        s_noise, s_golden = scores[: len(seeds)], scores[len(seeds) :]
        finite = torch.isfinite(golden.flatten(1)).all(1).cpu() & torch.isfinite(s_noise) & torch.isfinite(s_golden)
        keep = finite & (s_golden - s_noise > config.margin)
        idx = keep.nonzero().flatten()
        name = f"shard-{shard:05d}.safetensors"
        tensors = {
            "noise": noise.float().cpu()[idx].contiguous(),
            "golden": golden.float().cpu()[idx].contiguous(),
            "prompt_id": torch.tensor(prompt_ids, dtype=torch.long)[idx].contiguous(),
            "seed": torch.tensor(seeds, dtype=torch.long)[idx].contiguous(),
            "score_noise": s_noise[idx].contiguous(),
            "score_golden": s_golden[idx].contiguous(),
        }
        tmp = out / SHARDS_DIR / f".{name}.tmp"
        save_file(tensors, str(tmp))
        tmp.replace(out / SHARDS_DIR / name)
        append_row(
            manifest,
            {
                "shard": shard,
                "file": f"{SHARDS_DIR}/{name}",
                "units": hi - lo,
                "kept": int(idx.numel()),
                "win_rate": round(float(keep.float().mean()), 4),
            },
        )
        computed += 1
        tried += hi - lo
        kept_total += int(idx.numel())
        done.add(shard)
        if on_shard is not None:
            on_shard(len(done), total, int(idx.numel()))
    return CollectSummary(
        out, total, len(done), computed, tried, kept_total, meter.acc.nfe, round(time.perf_counter() - start_time, 2)
    )


@dataclass
class NoisePromptDataset:
    """The kept pairs of a collection folder, in shard order."""

    noise: torch.Tensor  # [N, *latent]
    golden: torch.Tensor  # [N, *latent]
    prompt_id: torch.Tensor  # [N] rows of ``prompts``
    seed: torch.Tensor  # [N]
    prompts: list[str]
    settings: dict[str, Any]

    def __len__(self) -> int:
        return int(self.noise.shape[0])


def load_dataset(out_dir: str | Path) -> NoisePromptDataset:
    """Reads every shard listed in the manifest (a shard file without a manifest line is ignored)."""
    out = Path(out_dir)
    if not (out / SETTINGS_FILE).is_file():
        raise FileNotFoundError(
            f"{out} is not an NPD folder (no {SETTINGS_FILE}); make one with `noisesearch npnet collect`"
        )
    try:
        settings = json.loads((out / SETTINGS_FILE).read_bytes().decode("utf-8"))
        if not isinstance(settings, dict) or not isinstance(settings.get("prompts"), list):
            raise ValueError("expected an object with a 'prompts' list")
    except (OSError, ValueError, RecursionError) as e:  # JSON and UTF-8 errors are ValueErrors
        raise ValueError(
            f"{out / SETTINGS_FILE} is not an NPD settings file ({e}); collect again into a new folder"
        ) from None
    rows = read_jsonl(out / MANIFEST_FILE, required_key="shard") if (out / MANIFEST_FILE).exists() else []
    parts = []
    for r in sorted(rows, key=lambda r: str(r["shard"])):
        shard_file = out / str(r.get("file", ""))
        try:
            part = load_file(str(shard_file))
            if part["noise"].shape[0] > 0:
                parts.append(part)
        except Exception as e:  # missing, truncated or foreign shard (safetensors raises its own error type)
            raise ValueError(
                f"NPD shard {shard_file} listed in {out / MANIFEST_FILE} cannot be read ({type(e).__name__}: {e}); "
                "delete its manifest line and collect again to redo it"
            ) from None
    if not parts:
        raise ValueError(f"{out} has no kept pairs yet; collect more (or lower --margin)")
    return NoisePromptDataset(
        noise=torch.cat([p["noise"] for p in parts]),
        golden=torch.cat([p["golden"] for p in parts]),
        prompt_id=torch.cat([p["prompt_id"] for p in parts]),
        seed=torch.cat([p["seed"] for p in parts]),
        prompts=list(settings["prompts"]),
        settings=settings,
    )
