"""Gradient preprocessing for coordinate-wise learned optimizers.

LogAndSign is from Andrychowicz et al. 2016, Appendix A: it maps gradients spanning
many orders of magnitude to two features of order one.
"""

import jax
import jax.numpy as jnp


def log_and_sign(grad: jax.Array, p: float) -> jax.Array:
    """Maps each gradient coordinate to two features, stacked on a new last axis.

    ``(log|g| / p, sign(g))`` where ``|g| ≥ e^-p``, and ``(-1, e^p · g)`` elsewhere.
    The two branches meet continuously in the first feature at ``|g| = e^-p``.

    Args:
      grad: gradient array of any shape.
      p: the scale parameter (10 in the paper).

    Returns:
      An array of shape ``grad.shape + (2,)``.

    Example:
      >>> import jax.numpy as jnp
      >>> log_and_sign(jnp.array([1.0, 0.0]), p=10.0).tolist()
      [[0.0, 1.0], [-1.0, 0.0]]

    """
    threshold = jnp.exp(-p).astype(grad.dtype)
    large = jnp.abs(grad) >= threshold
    # The clamp keeps log away from 0 so neither branch yields inf or a NaN gradient.
    log_mag = jnp.log(jnp.maximum(jnp.abs(grad), threshold)) / p
    first = jnp.where(large, log_mag, -jnp.ones_like(grad))
    second = jnp.where(large, jnp.sign(grad), jnp.exp(p).astype(grad.dtype) * grad)
    return jnp.stack([first, second], axis=-1)
