"""Theory diagnostics recorded at evaluation steps (filled in with the theory module)."""
from __future__ import annotations


def hooks_for(config, task):
    return ()
