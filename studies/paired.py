"""Paired comparison of two settings from runs matched one to one (same seed, data, model and
budget): the ratio of their errors with a confidence interval, and an exact sign-flip test.

Errors are compared on a log scale, ``d_i = ln(a_i / b_i)``: a ratio is what a setting changes
(a 10% better force MAE is the same statement at 30 and at 10 meV/Å), and pairs from different
molecules can be pooled. The test is the exact paired permutation (sign-flip) test of the mean of
``d``: under the null hypothesis that the two settings are exchangeable within a pair, every sign
pattern of the ``d_i`` is equally likely. It needs no normality, only that pairs are independent
and that the two runs of a pair differ in nothing but the setting, which the study's design
gives (the seed fixes initialisation and batch order for both). With ``n`` pairs the smallest
two-sided p-value it can give is ``2 / 2**n``: three pairs cannot reach 0.05, six can. The
interval is Student's t on the mean of ``d`` (it assumes roughly normal ``d``; with few pairs
read it as a rough guide beside the exact test).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def sign_flip_p(d) -> float:
    """Two-sided exact p-value of mean(d) = 0 against all 2**n sign patterns (n <= 20)."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    if n == 0:
        return float("nan")
    if n > 20:
        raise ValueError("sign_flip_p enumerates 2**n patterns; use at most 20 pairs")
    observed = abs(d.mean())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    means = np.abs(signs @ d) / n
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def compare(a, b, confidence: float = 0.95) -> dict:
    """Setting ``a`` against ``b``, errors paired element by element: geometric-mean ratio
    ``a / b``, its confidence interval, the exact sign-flip p-value, and how many pairs ``a``
    won."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("compare() needs two equally long, non-empty lists of paired errors")
    d = np.log(a / b)
    n = len(d)
    out = {"pairs": n, "ratio": float(math.exp(d.mean())), "wins": int((d < 0).sum()),
           "p_sign_flip": sign_flip_p(d), "smallest_possible_p": 2.0 / 2 ** n,
           "ratio_low": float("nan"), "ratio_high": float("nan")}
    if n > 1:
        from scipy.stats import t  # scipy comes with e3nn
        half = float(t.ppf(0.5 + confidence / 2, n - 1)) * d.std(ddof=1) / math.sqrt(n)
        out["ratio_low"], out["ratio_high"] = math.exp(d.mean() - half), math.exp(d.mean() + half)
    return out


def describe(name_a: str, name_b: str, c: dict, alpha: float = 0.05) -> str:
    """One sentence: which is lower, by how much, and whether the pairs show it."""
    pct = (c["ratio"] - 1) * 100
    word = "lower" if pct < 0 else "higher"
    span = (f", 95% interval {c['ratio_low']:.2f}-{c['ratio_high']:.2f}"
            if not math.isnan(c["ratio_low"]) else "")
    verdict = ("a difference the pairs show (p < %.2f)" % alpha if c["p_sign_flip"] < alpha else
               "not shown by the pairs" + (
                   f" (with {c['pairs']} pairs no p below {c['smallest_possible_p']:.2f} is possible)"
                   if c["smallest_possible_p"] >= alpha else ""))
    return (f"`{name_a}` vs `{name_b}`: force MAE ratio {c['ratio']:.3f} ({abs(pct):.1f}% {word}"
            f"{span}), `{name_a}` lower in {c['wins']} of {c['pairs']} pairs, sign-flip "
            f"p = {c['p_sign_flip']:.3f}: {verdict}.")
