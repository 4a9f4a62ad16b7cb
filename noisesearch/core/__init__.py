"""The batched denoising core: schedules, solvers, per-candidate seeds, model adapters."""

from noisesearch.core.adapter import ModelAdapter, ModelInfo, PromptEmbeddings
from noisesearch.core.sampler import CoreConfig, DenoisingCore, Trajectory
from noisesearch.core.schedule import SOLVERS, Schedule, build_schedule
from noisesearch.core.seeds import candidate_seeds, initial_latents

__all__ = [
    "SOLVERS",
    "CoreConfig",
    "DenoisingCore",
    "ModelAdapter",
    "ModelInfo",
    "PromptEmbeddings",
    "Schedule",
    "Trajectory",
    "build_schedule",
    "candidate_seeds",
    "initial_latents",
]
