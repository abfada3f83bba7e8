"""Closed forms of the sample-size threshold p_c(M) that the phase analysis fits and compares
(docs/theory.md, scaling law). `c*ln(M)/M` is the theory's form (Thm 4; reference c = 2.7482)."""
from __future__ import annotations

import numpy as np

FORMS = ("c*ln(M)/M", "a*M^-b*ln(M)", "c/sqrt(M)", "a*M^-b")


def form_values(name: str, params: dict, m) -> np.ndarray:
    """The form `name` with `params` ({"c"} or {"a", "b"}) at group orders m: (…,) → (…,)."""
    m = np.asarray(m, float)
    if name == "c*ln(M)/M":
        return params["c"] * np.log(m) / m
    if name == "a*M^-b*ln(M)":
        return params["a"] * m ** (-params["b"]) * np.log(m)
    if name == "c/sqrt(M)":
        return params["c"] / np.sqrt(m)
    if name == "a*M^-b":
        return params["a"] * m ** (-params["b"])
    raise ValueError(f"unknown scaling form '{name}': choose one of {', '.join(FORMS)}")
