"""noisesearch: inference-time noise search for diffusion models.

Spend extra inference compute to find initial noises (and sampling paths) that a verifier scores
highly; see :func:`noisesearch.search`.
"""

from noisesearch.accounting import Accounting, BudgetExceeded
from noisesearch.api import search
from noisesearch.core import CoreConfig, DenoisingCore, Trajectory
from noisesearch.engine import Candidate, RoundRecord, SearchContext, SearchResult
from noisesearch.models import load_model
from noisesearch.strategies import available_strategies, make_strategy
from noisesearch.verifiers import Verifier, VerifierSpec, available_verifiers, load_verifier, register_verifier

__version__ = "0.1.0"

__all__ = [
    "Accounting",
    "BudgetExceeded",
    "Candidate",
    "CoreConfig",
    "DenoisingCore",
    "RoundRecord",
    "SearchContext",
    "SearchResult",
    "Trajectory",
    "Verifier",
    "VerifierSpec",
    "available_strategies",
    "available_verifiers",
    "load_model",
    "load_verifier",
    "make_strategy",
    "register_verifier",
    "search",
]

# benchmark sweeps: `noisesearch.sweep(...)` runs one; the package is `noisesearch.sweeps`
from noisesearch.sweeps import SweepConfig, SweepSummary, sweep  # noqa: E402

__all__ += ["SweepConfig", "SweepSummary", "sweep"]
