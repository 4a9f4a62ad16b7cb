"""Verifier ensembles: the rank mean of Ma et al. 2025 and a weighted z-score.

Ma et al. 2025 ("Inference-Time Scaling for Diffusion Models beyond Scaling Denoising Steps") rank
each candidate under each verifier and average the ranks, so verifiers on different scales count
equally. A rank, like a z-score, is relative to a comparison set, and that set decides what a score
means:

* **batch mode** (default, the paper's): each image is compared with the other images of the same
  ``score`` call. Scores are then comparable only within one call: fine for random search scored in
  one round, but not across the rounds of zero-order search, the previews of search over paths or
  the steps of SMC, which each score a different batch.
* **calibrated mode**: after :meth:`calibrate` (or with ``reference=``), each image is compared with
  a fixed reference set of scores per verifier (e.g. a few dozen samples of the model for the
  prompts at hand), which makes the ensemble an ordinary, batch-independent verifier.

Rank: the fraction of the comparison set an image beats under a verifier (ties count half), in
[0, 1], averaged over the verifiers. Z-score: (score − mean) / std of the comparison set per
verifier, combined with weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from noisesearch.verifiers.base import (
    Verifier,
    as_verifier,
    check_prompt,
    check_scores,
    load_verifier,
    register_verifier,
    score_details,
)


class _Ensemble:
    """Shared parts: member verifiers, their raw scores [V, B], and an optional reference [V, R]."""

    differentiable: bool = False

    def __init__(self, verifiers: Sequence[Verifier], kind: str, name: str | None = None,
                 reference: Sequence[torch.Tensor] | None = None) -> None:
        if len(verifiers) < 1:
            raise ValueError("an ensemble needs at least one verifier")
        self.verifiers = [as_verifier(v) for v in verifiers]
        self.name = name or f"{kind}({'+'.join(v.name for v in self.verifiers)})"
        self.reference: list[torch.Tensor] | None = None
        #: each member's raw scores (and sub-scores) from the last ``score`` call
        self.last_details: dict[str, torch.Tensor] = {}
        if reference is not None:
            self.set_reference(reference)

    def check_prompt(self, prompt: str) -> None:
        """Every member must be able to score ``prompt``."""
        for v in self.verifiers:
            check_prompt(v, prompt)

    def raw_scores(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Each member's scores, [V, B] float32 on CPU."""
        prompts = list(prompts)
        self.last_details = {}
        rows = []
        for v in self.verifiers:
            rows.append(check_scores(v.score(images, prompts), len(prompts), v.name).float().cpu())
            self._keep_details(v, rows[-1])
        return torch.stack(rows)

    def _keep_details(self, verifier: Verifier, scores: torch.Tensor) -> None:
        """Records a member's raw scores and its own sub-scores (``last_details``) for the report."""
        self.last_details[verifier.name] = scores.detach()
        for k, d in score_details(verifier).items():
            self.last_details[f"{verifier.name}.{k}"] = d

    def set_reference(self, reference: Sequence[torch.Tensor]) -> None:
        """Fixes the comparison set: one 1-D tensor of reference scores per member verifier."""
        if len(reference) != len(self.verifiers):
            raise ValueError(f"need one reference score tensor per verifier ({len(self.verifiers)}), got {len(reference)}")
        refs = [torch.as_tensor(r, dtype=torch.float32).detach().cpu().reshape(-1) for r in reference]
        if any(r.numel() < 2 or not torch.isfinite(r).all() for r in refs):
            raise ValueError("each reference needs at least 2 finite scores")
        self.reference = refs

    def calibrate(self, images: torch.Tensor, prompts: Sequence[str]) -> _Ensemble:
        """Scores a reference batch with every member and uses it as the comparison set from now on."""
        with torch.no_grad():
            raw = self.raw_scores(images, prompts)
        self.set_reference(list(raw))
        return self


class RankEnsemble(_Ensemble):
    """Mean over verifiers of each image's rank (fraction of the comparison set it beats), in [0, 1]."""

    differentiable = False  # ranks are piecewise constant

    def __init__(self, verifiers: Sequence[Verifier], name: str | None = None,
                 reference: Sequence[torch.Tensor] | None = None) -> None:
        super().__init__(verifiers, "rank", name, reference)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        raw = self.raw_scores(images, prompts)  # [V, B]
        v, b = raw.shape
        ranks = torch.empty(v, b)
        for i in range(v):
            s = raw[i]
            if self.reference is None:
                # 1. batch mode: compare with the other B − 1 images   [B, B] pairwise
                beats = (s[:, None] > s[None, :]).float() + 0.5 * (s[:, None] == s[None, :]).float()
                ranks[i] = (beats.sum(1) - 0.5) / (b - 1) if b > 1 else torch.full((b,), 0.5)
            else:
                # 1'. calibrated mode: compare with the R reference scores   [B, R]
                ref = self.reference[i]
                beats = (s[:, None] > ref[None, :]).float() + 0.5 * (s[:, None] == ref[None, :]).float()
                ranks[i] = beats.mean(1)
            ranks[i] = torch.where(torch.isfinite(s), ranks[i], torch.full_like(s, float("-inf")))
        # 2. average over verifiers   [B]
        return ranks.mean(0)


class ZScoreEnsemble(_Ensemble):
    """Weighted sum over verifiers of z-scores against the comparison set."""

    def __init__(self, verifiers: Sequence[Verifier], weights: Sequence[float] | None = None, name: str | None = None,
                 reference: Sequence[torch.Tensor] | None = None) -> None:
        super().__init__(verifiers, "zscore", name, reference)
        w = [1.0 / len(self.verifiers)] * len(self.verifiers) if weights is None else [float(x) for x in weights]
        if len(w) != len(self.verifiers):
            raise ValueError(f"need one weight per verifier ({len(self.verifiers)}), got {len(w)}")
        if not all(x >= 0 for x in w) or sum(w) == 0:
            raise ValueError(f"weights must be >= 0 and not all zero, got {w}")
        self.weights = torch.tensor(w)
        self.differentiable = all(getattr(v, "differentiable", False) for v in self.verifiers)

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        prompts = list(prompts)
        total = None
        self.last_details = {}
        for i, (verifier, w) in enumerate(zip(self.verifiers, self.weights)):
            s = check_scores(verifier.score(images, prompts), len(prompts), verifier.name).float().cpu()  # [B]
            self._keep_details(verifier, s)
            if self.reference is None:
                # batch mode: statistics of this call's finite scores (population std; B = 1 gives z = 0);
                # detached, so that each image's gradient is its own
                finite = s.detach()[torch.isfinite(s.detach())]
                mean = finite.mean() if finite.numel() else torch.tensor(0.0)
                std = finite.std(unbiased=False) if finite.numel() else torch.tensor(1.0)
            else:
                mean, std = self.reference[i].mean(), self.reference[i].std(unbiased=False)
            z = (s - mean) / std.clamp(min=1e-8)
            total = w * z if total is None else total + w * z
        assert total is not None
        return total


def make_ensemble(kind: str, verifiers: Sequence[str | Verifier] | str, weights: Sequence[float] | None = None,
                  device: str | torch.device = "cpu") -> RankEnsemble | ZScoreEnsemble:
    """Builds a ``"rank"`` or ``"zscore"`` ensemble from registered verifier names (or verifiers).

    ``verifiers`` may be a comma-separated string of names, e.g. ``"toyclip,toyrelation"``.
    """
    names = [s.strip() for s in verifiers.split(",") if s.strip()] if isinstance(verifiers, str) else list(verifiers)
    members = [load_verifier(v, device=device) if isinstance(v, str) else v for v in names]
    if kind == "rank":
        if weights is not None:
            raise ValueError("the rank ensemble is an unweighted mean (Ma et al.); use kind='zscore' for weights")
        return RankEnsemble(members)
    if kind == "zscore":
        return ZScoreEnsemble(members, weights)
    raise ValueError(f"unknown ensemble {kind!r}; choose 'rank' or 'zscore'")


@register_verifier("rank-ensemble", "mean rank under several verifiers (Ma et al. 2025); option verifiers='a,b'")
def _rank_factory(device: str | torch.device = "cpu", verifiers: str = "") -> Verifier:
    if not verifiers:
        raise ValueError("rank-ensemble needs verifiers='name1,name2'")
    return make_ensemble("rank", verifiers, device=device)


@register_verifier("zscore-ensemble", "weighted z-score of several verifiers; options verifiers='a,b', weights")
def _zscore_factory(device: str | torch.device = "cpu", verifiers: str = "", weights: Sequence[float] | None = None) -> Verifier:
    if not verifiers:
        raise ValueError("zscore-ensemble needs verifiers='name1,name2'")
    return make_ensemble("zscore", verifiers, weights, device=device)
