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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from noisesearch.verifiers.base import (
    Verifier,
    as_verifier,
    check_prompt,
    check_scores,
    register_verifier,
    score_details,
)
from noisesearch.verifiers.spec import VerifierSpec


class _Ensemble:
    """Shared parts: member verifiers, their raw scores [V, B], and an optional reference [V, R]."""

    differentiable: bool = False

    def __init__(
        self,
        verifiers: Sequence[Verifier],
        kind: str,
        name: str | None = None,
        reference: Sequence[torch.Tensor] | None = None,
    ) -> None:
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
            raise ValueError(
                f"need one reference score tensor per verifier ({len(self.verifiers)}), got {len(reference)}"
            )
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

    def __init__(
        self, verifiers: Sequence[Verifier], name: str | None = None, reference: Sequence[torch.Tensor] | None = None
    ) -> None:
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

    def __init__(
        self,
        verifiers: Sequence[Verifier],
        weights: Sequence[float] | None = None,
        name: str | None = None,
        reference: Sequence[torch.Tensor] | None = None,
    ) -> None:
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


def member_specs(
    verifiers: str | VerifierSpec | Sequence[Any], owner: str = "ensemble"
) -> list[VerifierSpec | Verifier]:
    """An ensemble's members as specs (built verifiers pass through): ``'a,b'``, a spec, or a list
    of names, spec strings, specs, tables ``{name = ...}`` or verifiers. Raises ``ValueError``."""
    example = f"{owner}(verifiers=[toyclip,toyrelation])"
    if isinstance(verifiers, VerifierSpec):
        return [verifiers]
    if isinstance(verifiers, str):
        if not verifiers.strip():
            raise ValueError(f"{owner} needs member verifiers, e.g. {example}")
        try:
            return list(VerifierSpec.parse_list(verifiers))
        except ValueError as e:
            raise ValueError(f"{owner} members: {e}") from e
    if not isinstance(verifiers, Sequence) or isinstance(verifiers, bytes):
        raise ValueError(f"{owner} option verifiers takes a list of verifier specs, e.g. {example}; got {verifiers!r}")
    members: list[VerifierSpec | Verifier] = []
    for i, item in enumerate(verifiers, start=1):
        if isinstance(item, VerifierSpec | str | Mapping):
            try:
                members.append(VerifierSpec.coerce(item))
            except ValueError as e:
                raise ValueError(f"{owner} member {i}: {e}") from e
        elif isinstance(item, Verifier) or callable(item):
            members.append(as_verifier(item))
        else:
            raise ValueError(f"{owner} member {i} is {item!r}, not a verifier spec; write e.g. {example}")
    if not members:
        raise ValueError(f"{owner} needs member verifiers, e.g. {example}")
    return members


def _validate_members(verifiers: Any, owner: str) -> list[VerifierSpec | Verifier]:
    """The members, each spec validated (recursively for nested ensembles), before anything loads."""
    members = member_specs(verifiers, owner)
    for i, member in enumerate(members, start=1):
        if isinstance(member, VerifierSpec):
            try:
                member.validate()
            except ValueError as e:
                raise ValueError(f"{owner} member {i} ({member.name}): {e}") from e
    return members


def _validate_weights(weights: Any, members: int, owner: str) -> None:
    if weights is None:
        return
    if isinstance(weights, str | bytes) or not isinstance(weights, Sequence):
        raise ValueError(
            f"{owner} option weights takes a list of numbers, one per member, e.g. weights=[1,2]; got {weights!r}"
        )
    if len(weights) != members:
        raise ValueError(
            f"{owner} has {members} member verifier(s) but {len(weights)} weight(s); give one weight per member"
        )
    if not all(
        isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights
    ) or not any(w > 0 for w in weights):
        raise ValueError(f"{owner} weights must be numbers >= 0, not all zero; got {list(weights)}")


def make_ensemble(
    kind: str,
    verifiers: Sequence[str | VerifierSpec | Verifier] | str,
    weights: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> RankEnsemble | ZScoreEnsemble:
    """Builds a ``"rank"`` or ``"zscore"`` ensemble from registered verifiers, specs or built verifiers.

    ``verifiers`` may be a comma-separated string, e.g. ``"toyclip,toyrelation"`` or
    ``"toyclip,clipscore(model=ViT-B-32)"``. Every member spec is validated before any loads.
    """
    if kind not in ("rank", "zscore"):
        raise ValueError(f"unknown ensemble {kind!r}; choose 'rank' or 'zscore'")
    if kind == "rank" and weights is not None:
        raise ValueError("the rank ensemble is an unweighted mean (Ma et al.); use kind='zscore' for weights")
    owner = f"{kind}-ensemble"
    specs = _validate_members(verifiers, owner)
    _validate_weights(weights, len(specs), owner)
    members = [m.load(device) if isinstance(m, VerifierSpec) else m for m in specs]
    return RankEnsemble(members) if kind == "rank" else ZScoreEnsemble(members, weights)


def _validate_rank(verifiers: str | Sequence[Any] = "") -> None:
    _validate_members(verifiers, "rank-ensemble")


def _validate_zscore(verifiers: str | Sequence[Any] = "", weights: Sequence[float] | None = None) -> None:
    _validate_weights(weights, len(_validate_members(verifiers, "zscore-ensemble")), "zscore-ensemble")


@register_verifier(
    "rank-ensemble",
    "mean rank under several verifiers (Ma et al. 2025): rank-ensemble(verifiers=[a,b])",
    validate=_validate_rank,
)
def _rank_factory(device: str | torch.device = "cpu", verifiers: str | Sequence[str | VerifierSpec] = "") -> Verifier:
    return make_ensemble("rank", verifiers, device=device)


@register_verifier(
    "zscore-ensemble",
    "weighted z-score of several verifiers: zscore-ensemble(verifiers=[a,b], weights=[1,2])",
    validate=_validate_zscore,
)
def _zscore_factory(
    device: str | torch.device = "cpu",
    verifiers: str | Sequence[str | VerifierSpec] = "",
    weights: Sequence[float] | None = None,
) -> Verifier:
    return make_ensemble("zscore", verifiers, weights, device=device)
