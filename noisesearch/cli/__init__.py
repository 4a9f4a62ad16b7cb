"""The ``noisesearch`` command line: one module per command group.

Every user error ends with a one-line cause on stderr and exit code 2, never a traceback.
"""

from noisesearch.cli import npnet, run, sweep, toyworld  # noqa: F401  (importing registers the commands)
from noisesearch.cli.app import app, main

__all__ = ["app", "main"]
