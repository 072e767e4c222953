"""Customer lifetime value: BG/NBD (Fader, Hardie and Lee 2005) for how many purchases a person
will make, Gamma-Gamma (Fader, Hardie and Lee 2005, "RFM and CLV") for how much each is worth.

Small SciPy implementations fitted by maximum likelihood (L-BFGS-B on log parameters):

* BG/NBD log-likelihood per person with (x, t_x, T): ln Γ(r+x) - ln Γ(r) + r ln α
  + ln B(a, b+x) - ln B(a, b) + ln[(α+T)^-(r+x) + δ(x>0) a/(b+x-1) (α+t_x)^-(r+x)]
  (with the Beta terms written as Gamma functions);
* expected purchases in the next ``t``:  E[Y(t) | x, t_x, T] =
  (a+b+x-1)/(a-1) [1 - ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(α+T+t))]
  / (1 + δ(x>0) a/(b+x-1) ((α+T)/(α+t_x))^(r+x));  P(alive) is the last factor's inverse;
* Gamma-Gamma on repeat buyers' mean value m over x purchases: ln Γ(px+q) - ln Γ(px) - ln Γ(q)
  + q ln γ + (px-1) ln m + px ln x - (px+q) ln(γ + m x); E[M | x, m] = p(γ + m x)/(px + q - 1).

Expected value over a horizon = expected purchases x expected value per purchase (no discount).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special  # type: ignore[import-untyped]


@dataclass(frozen=True, slots=True)
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float

    def as_dict(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}


@dataclass(frozen=True, slots=True)
class GammaGamma:
    p: float
    q: float
    gamma: float

    def as_dict(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "gamma": self.gamma}


def bgnbd_log_likelihood(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    r, alpha, a, b = params
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = (
        special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
    )
    a3 = -(r + x) * np.log(alpha + big_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.where(
            x > 0,
            np.log(a) - np.log(np.maximum(b + x - 1, 1e-300)) - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return np.asarray(a1 + a2 + np.logaddexp(a3, a4))


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> BgNbd:
    """Maximum-likelihood BG/NBD parameters."""

    def loss(log_params: np.ndarray) -> float:
        return -float(bgnbd_log_likelihood(np.exp(log_params), x, t_x, big_t).sum())

    start = np.log(np.array([1.0, max(float(np.mean(big_t)), 1e-3), 1.0, 1.0]))
    found = optimize.minimize(loss, start, method="L-BFGS-B", bounds=[(-12.0, 12.0)] * 4)
    r, alpha, a, b = np.exp(found.x)
    return BgNbd(float(r), float(alpha), float(a), float(b))


def expected_purchases(
    model: BgNbd, t: float, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    """E[purchases in the next t | x, t_x, T] per person."""
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    z = t / (alpha + big_t + t)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    first = (a + b + x - 1) / (a - 1)
    second = 1 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x) * hyp
    return np.asarray(first * second / _denominator(model, x, t_x, big_t))


def _denominator(model: BgNbd, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    with np.errstate(divide="ignore", invalid="ignore"):
        extra = np.where(
            x > 0,
            a / np.maximum(b + x - 1, 1e-300) * ((alpha + big_t) / (alpha + t_x)) ** (r + x),
            0.0,
        )
    return np.asarray(1 + extra)


def probability_alive(
    model: BgNbd, x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray
) -> np.ndarray:
    return np.asarray(1 / _denominator(model, x, t_x, big_t))


def gamma_gamma_log_likelihood(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> np.ndarray:
    p, q, gamma = params
    return np.asarray(
        special.gammaln(p * x + q)
        - special.gammaln(p * x)
        - special.gammaln(q)
        + q * np.log(gamma)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(gamma + m * x)
    )


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray) -> GammaGamma:
    """Maximum-likelihood Gamma-Gamma parameters over repeat buyers (x > 0, m > 0)."""
    keep = (x > 0) & (m > 0)
    xs, ms = x[keep], m[keep]

    def loss(log_params: np.ndarray) -> float:
        return -float(gamma_gamma_log_likelihood(np.exp(log_params), xs, ms).sum())

    start = np.log(np.array([1.0, 1.0, max(float(np.mean(ms)), 1e-3)]))
    found = optimize.minimize(loss, start, method="L-BFGS-B", bounds=[(-12.0, 12.0)] * 3)
    p, q, gamma = np.exp(found.x)
    return GammaGamma(float(p), float(q), float(gamma))


def expected_value(model: GammaGamma, x: np.ndarray, m: np.ndarray, fallback: float) -> np.ndarray:
    """E[value per purchase | x, m]; persons without repeat purchases get the population mean
    p γ / (q - 1) (or ``fallback`` when q <= 1)."""
    p, q, gamma = model.p, model.q, model.gamma
    population = p * gamma / (q - 1) if q > 1 else fallback
    with np.errstate(divide="ignore", invalid="ignore"):
        conditional = p * (gamma + m * x) / (p * x + q - 1)
    return np.asarray(np.where((x > 0) & (m > 0), conditional, population))
