"""Slow float64 NumPy references written straight from the paper's equations.

Used by the tests only. Loops are explicit on purpose: each line maps to a
symbol of Espeholt et al. (2018), eq. (1) and section 4.2.
"""

import numpy as np


def vtrace_reference(log_rhos, discounts, rewards, values, bootstrap_value,
                     clip_rho_threshold=1.0, clip_c_threshold=1.0,
                     clip_pg_rho_threshold=1.0, lambda_=1.0):
  """V-trace by the *sum* definition, for ``[T, ...]`` arrays (float64).

  v_s = V(x_s) + sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i c_i) delta_t V
  """
  log_rhos, discounts, rewards, values = (
      np.asarray(a, np.float64) for a in (log_rhos, discounts, rewards, values))
  bootstrap_value = np.asarray(bootstrap_value, np.float64)
  T = values.shape[0]
  clip = lambda x, thr: x if thr is None else np.minimum(thr, x)
  rho = np.exp(log_rhos)
  rho_clipped = clip(rho, clip_rho_threshold)
  c = lambda_ * clip(rho, clip_c_threshold)
  v_ext = np.concatenate([values, bootstrap_value[None]], axis=0)  # V(x_0..x_T)

  delta = np.zeros_like(values)
  for t in range(T):
    delta[t] = rho_clipped[t] * (rewards[t] + discounts[t] * v_ext[t + 1]
                                 - v_ext[t])

  vs = np.zeros_like(values)
  for s in range(T):
    total = np.zeros_like(bootstrap_value)
    for t in range(s, T):
      coeff = np.ones_like(bootstrap_value)
      for i in range(s, t):
        coeff = coeff * discounts[i] * c[i]
      total = total + coeff * delta[t]
    vs[s] = values[s] + total

  vs_ext = np.concatenate([vs, bootstrap_value[None]], axis=0)
  pg_rho = clip(rho, clip_pg_rho_threshold)
  pg_adv = np.zeros_like(values)
  for s in range(T):
    pg_adv[s] = pg_rho[s] * (rewards[s] + discounts[s] * vs_ext[s + 1]
                             - values[s])
  return vs, pg_adv


def n_step_returns_reference(discounts, rewards, bootstrap_value):
  """G_s = sum_{t=s}^{T-1} (prod_{i=s}^{t-1} gamma_i) r_t
           + (prod_{i=s}^{T-1} gamma_i) V(x_T)."""
  discounts = np.asarray(discounts, np.float64)
  rewards = np.asarray(rewards, np.float64)
  T = rewards.shape[0]
  out = np.zeros_like(rewards)
  for s in range(T):
    g = np.zeros_like(rewards[0])
    coeff = np.ones_like(rewards[0])
    for t in range(s, T):
      g = g + coeff * rewards[t]
      coeff = coeff * discounts[t]
    out[s] = g + coeff * np.asarray(bootstrap_value, np.float64)
  return out
