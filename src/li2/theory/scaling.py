"""Closed forms the phase study fits: the sample-size threshold p_c(M) (docs/theory.md, scaling law) and
the grokking time T(p) above it.

Threshold forms. `c*ln(M)/M` is the theory's (Thm 4; reference c = 2.7482). Each form is
    ln p_c(M) = ln s + log_shape(M; b)
with one scale s (c or a) and at most one exponent b, so a likelihood fit profiles s for each b:
    c*ln(M)/M      s = c, shape ln ln M − ln M            (b fixed at 1)
    a*M^-b*ln(M)   s = a, shape ln ln M − b·ln M          (free exponent, with the log factor)
    c/sqrt(M)      s = c, shape −½·ln M                   (b fixed at ½)
    a*M^-b         s = a, shape −b·ln M                   (free power law)
NESTED_IN names, for a one-parameter form, the free form it is a special case of and the exponent it
fixes (a likelihood-ratio test applies there; non-nested forms compare by AIC).

Grokking-time forms, T = grok step at training ratio p above p_c (x = p/p_c > 1):
    critical   T = A·(x − 1)^(−ν)           diverges at p_c (the issue's conjecture)
    ratio      T = A·x^(−γ)                 power of the ratio, finite at p_c (the earlier note: ≈440/x²)
    log        T = A·(ln x)^(−ν)            diverges at p_c like `critical`, flatter far above
Each is linear in ln T after transforming x: ln T = ln A − ν·u(x) with u = ln(x − 1), ln x or ln ln x.
"""
from __future__ import annotations

import numpy as np

FORMS = ("c*ln(M)/M", "a*M^-b*ln(M)", "c/sqrt(M)", "a*M^-b")
FREE_EXPONENT = {"a*M^-b*ln(M)": True, "a*M^-b": True, "c*ln(M)/M": False, "c/sqrt(M)": False}
FIXED_EXPONENT = {"c*ln(M)/M": 1.0, "c/sqrt(M)": 0.5}
NESTED_IN = {"c*ln(M)/M": ("a*M^-b*ln(M)", 1.0), "c/sqrt(M)": ("a*M^-b", 0.5)}
_LOG_FACTOR = {"c*ln(M)/M": True, "a*M^-b*ln(M)": True, "c/sqrt(M)": False, "a*M^-b": False}

GROK_TIME_FORMS = ("critical", "ratio", "log")


def _check(name: str) -> None:
    if name not in FORMS:
        raise ValueError(f"unknown scaling form '{name}': choose one of {', '.join(FORMS)}")


def scale_name(name: str) -> str:
    """The name of the form's scale parameter: "c" for the one-parameter forms, else "a"."""
    _check(name)
    return "a" if FREE_EXPONENT[name] else "c"


def log_shape(name: str, m, b: float | None = None) -> np.ndarray:
    """ln p_c − ln s of form `name` at group orders m (…,): −b·ln M, plus ln ln M for the log forms.
    b is the exponent of a free form (ignored, and fixed, for the one-parameter forms)."""
    _check(name)
    m = np.asarray(m, float)
    if not FREE_EXPONENT[name]:
        b = FIXED_EXPONENT[name]
    elif b is None:
        raise ValueError(f"form '{name}' needs its exponent b")
    shape = -float(b) * np.log(m)
    return shape + np.log(np.log(m)) if _LOG_FACTOR[name] else shape


def form_values(name: str, params: dict, m) -> np.ndarray:
    """The form `name` with `params` ({"c"} or {"a", "b"}) at group orders m: (…,) → (…,)."""
    _check(name)
    scale = params[scale_name(name)]
    return scale * np.exp(log_shape(name, m, params.get("b")))


def grok_time_regressor(form: str, x) -> np.ndarray:
    """u(x) of ln T = ln A − ν·u(x) for x = p/p_c (…,); NaN where the form is undefined (x ≤ 1)."""
    x = np.asarray(x, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if form == "critical":
            u = np.log(x - 1.0)
        elif form == "ratio":
            u = np.log(x)
        elif form == "log":
            u = np.log(np.log(x))
        else:
            raise ValueError(f"unknown grokking-time form '{form}': choose one of {', '.join(GROK_TIME_FORMS)}")
    return np.where(x > 1.0, u, np.nan) if form != "ratio" else u


def grok_time(form: str, x, amplitude: float, exponent: float) -> np.ndarray:
    """T(x) = A·exp(−ν·u(x)) of `form` at x = p/p_c (…,)."""
    return amplitude * np.exp(-exponent * grok_time_regressor(form, x))
