"""Verifiers: score decoded images against prompts (higher is better)."""

from noisesearch.verifiers.base import (
    CallableVerifier,
    Verifier,
    as_verifier,
    available_verifiers,
    check_scores,
    load_verifier,
    register_verifier,
)
from noisesearch.verifiers.spec import VerifierSpec

__all__ = [
    "CallableVerifier",
    "Verifier",
    "VerifierSpec",
    "as_verifier",
    "available_verifiers",
    "check_scores",
    "load_verifier",
    "register_verifier",
]
