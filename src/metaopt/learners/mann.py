"""A memory-augmented neural network: an LSTM controller with an LRUA external memory.

Santoro, Bartunov, Botvinick, Wierstra, Lillicrap 2016 ("One-shot learning with
memory-augmented neural networks"). An episode is a sequence: at step t the network
sees example x_t and the one-hot label of step t − 1 (the label arrives one step late)
and predicts the label of x_t, so it must bind each example to the label that follows
it in memory and retrieve the binding when the class comes again. Each step:

    h_t, c_t = LSTM([x_t, y_{t-1}, r_{t-1}], h_{t-1}, c_{t-1})
    k_t = tanh(W_k h_t + b_k),  α_t = W_α h_t + b_α          (one of each per head)
    r_t, memory_t = LRUA(memory_{t-1}, k_t, α_t)             (:mod:`.memory`)
    logits_t = W_o [h_t, r_t] + b_o

Here an N-way K-shot episode's support set, in an order drawn from the key, is the
sequence; each query then takes one step from the state after the support set (with
the last support label as its delayed label), so every query sees exactly the support
set, as the other learners' queries do. The meta-training loss is the mean
cross-entropy of every prediction, support steps (Santoro's objective) and queries.
θ holds the controller, the key, gate and output layers, and the memory settings: the
usage decay γ and each head's read strength β.
"""

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.core import checks
from metaopt.core.registry import Entry, option
from metaopt.core.types import EpisodicLearner, TaskFamily, Theta
from metaopt.learners.episodic import episode_shape
from metaopt.learners.memory import MemoryState, init_memory, memory_access
from metaopt.optimizers.lstm import init_lstm_cell, lstm_cell
from metaopt.tasks.fewshot import Episode


class ControllerState(NamedTuple):
    """The network's state between steps.

    Attributes:
      h: the controller's hidden state.
      c: its cell state.
      reads: ``(heads, slot_size)`` the last memory reads.
      memory: the external memory.
    """

    h: jax.Array
    c: jax.Array
    reads: jax.Array
    memory: MemoryState


def _dense(key: jax.Array, n_in: int, n_out: int) -> dict:
    return {"w": jax.random.normal(key, (n_in, n_out)) / jnp.sqrt(n_in), "b": jnp.zeros(n_out)}


def mann_step(
    theta: Theta, state: ControllerState, x: jax.Array, prev_label: jax.Array
) -> tuple[ControllerState, jax.Array]:
    """One step from example ``x`` and the previous step's one-hot label; returns the logits.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> learner = memory_augmented_network(3, ways=2, hidden_size=4, slots=6,
      ...     slot_size=2, heads=1)
      >>> theta = learner.init(jax.random.key(0))
      >>> state = initial_state(learner.config)
      >>> state, logits = mann_step(theta, state, jnp.ones(3), jnp.zeros(2))
      >>> logits.shape
      (2,)
    """
    heads, slot_size = state.reads.shape
    inputs = jnp.concatenate([x, prev_label, state.reads.reshape(-1)])
    h, c = lstm_cell(theta["controller"], inputs, state.h, state.c)
    keys = jnp.tanh(h @ theta["key"]["w"] + theta["key"]["b"]).reshape(heads, slot_size)
    gates = h @ theta["gate"]["w"] + theta["gate"]["b"]
    settings = theta["memory"]
    reads, memory = memory_access(
        state.memory,
        keys,
        gates,
        jnp.exp(settings["log_strength"]),
        jax.nn.sigmoid(settings["decay_logit"]),
    )
    logits = jnp.concatenate([h, reads.reshape(-1)]) @ theta["out"]["w"] + theta["out"]["b"]
    return ControllerState(h, c, reads, memory), logits


def initial_state(config: dict) -> ControllerState:
    """The state before the first step (zeros and an empty memory) of a MANN's ``config``.

    Example:
      >>> learner = memory_augmented_network(3, ways=2, slots=6, slot_size=2, heads=1)
      >>> initial_state(learner.config).memory.memory.shape
      (6, 2)
    """
    zeros = jnp.zeros(config["hidden_size"])
    heads, slot_size = config["heads"], config["slot_size"]
    return ControllerState(
        zeros, zeros, jnp.zeros((heads, slot_size)), init_memory(config["slots"], slot_size, heads)
    )


def sequence_logits(
    learner: EpisodicLearner, theta: Theta, episode: Episode, key: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The support sequence's and the queries' logits of the MANN ``learner``.

    Returns:
      ``(support_logits, support_labels, query_logits)``: ``(n_support, ways)`` logits
      of the support set in the order presented, its labels in that order, and
      ``(n_query, ways)`` logits of each query taken from the state after the support.

    Example:
      >>> import jax
      >>> from metaopt.tasks.datasets import digits
      >>> from metaopt.tasks.fewshot import fewshot_family
      >>> fam = fewshot_family(digits(), classes=range(5), ways=5, shots=2)
      >>> learner = memory_augmented_network(64, ways=5, hidden_size=16)
      >>> theta = learner.init(jax.random.key(0))
      >>> s, labels, q = sequence_logits(learner, theta, fam.sample(jax.random.key(1)),
      ...     jax.random.key(2))
      >>> s.shape, labels.shape, q.shape
      ((10, 5), (10,), (75, 5))
    """
    if learner.name != "memory_augmented":
        raise ValueError(f"learner must be a memory_augmented_network, got {learner.name!r}")
    return _sequence(learner.config, theta, episode, key)


def _sequence(config: dict, theta: Theta, episode: Episode, key: jax.Array):
    ways = config["ways"]
    order = jax.random.permutation(key, episode.x_support.shape[0])
    xs, labels = episode.x_support[order], episode.y_support[order]
    one_hot = jax.nn.one_hot(labels, ways, dtype=xs.dtype)
    delayed = jnp.concatenate([jnp.zeros((1, ways), xs.dtype), one_hot[:-1]])

    def step(state, inputs):
        return mann_step(theta, state, *inputs)

    state, support_logits = jax.lax.scan(step, initial_state(config), (xs, delayed))
    query_logits = jax.vmap(lambda x: mann_step(theta, state, x, one_hot[-1])[1])(episode.x_query)
    return support_logits, labels, query_logits


def instance_numbers(labels: jax.Array) -> jax.Array:
    """How many times each step's class has been presented, counting this step (1, 2, ...).

    Example:
      >>> import jax.numpy as jnp
      >>> instance_numbers(jnp.array([3, 1, 3, 3, 1])).tolist()
      [1, 1, 2, 3, 2]
    """
    n = labels.shape[0]
    earlier = jnp.tril(jnp.ones((n, n), bool), k=-1)
    return 1 + jnp.sum(earlier & (labels[:, None] == labels[None, :]), axis=1)


def memory_augmented_network(
    input_size: int,
    ways: int,
    *,
    hidden_size: int = 200,
    slots: int = 128,
    slot_size: int = 40,
    heads: int = 4,
    decay: float = 0.95,
    strength: float = 1.0,
) -> EpisodicLearner:
    """Santoro et al.'s MANN for ``ways``-way episodes of ``input_size``-feature examples.

    Args:
      input_size: features per (flattened) example.
      ways: classes per episode (the one-hot label's width and the output's).
      hidden_size: the LSTM controller's units (the paper's 200).
      slots: memory rows (the paper's 128).
      slot_size: width of a row (the paper's 40).
      heads: read heads, each writing its key (the paper's 4).
      decay: the usage decay γ's initial value; θ learns it.
      strength: the read strength β's initial value (1 is the paper's cosine
        softmax); θ learns it.

    Example:
      >>> import jax
      >>> from metaopt.tasks.datasets import digits
      >>> from metaopt.tasks.fewshot import fewshot_family
      >>> fam = fewshot_family(digits(), classes=range(5), ways=5, shots=1)
      >>> learner = memory_augmented_network(64, ways=5, hidden_size=16)
      >>> theta = learner.init(jax.random.key(0))
      >>> learner.predict(theta, fam.sample(jax.random.key(1)), jax.random.key(2)).shape
      (75, 5)
    """
    input_size = checks.positive_int("input_size", input_size)
    ways = checks.positive_int("ways", ways)
    hidden_size = checks.positive_int("hidden_size", hidden_size)
    slots = checks.positive_int("slots", slots)
    slot_size = checks.positive_int("slot_size", slot_size)
    heads = checks.positive_int("heads", heads)
    if heads > slots:
        raise ValueError(f"heads ({heads}) must not exceed slots ({slots})")
    decay = checks.positive_float("decay", decay)
    if decay >= 1:
        raise ValueError(f"decay must lie in (0, 1), got {decay}")
    strength = checks.positive_float("strength", strength)
    reads_size = heads * slot_size

    def init(key: jax.Array) -> Theta:
        k_ctrl, k_key, k_gate, k_out = jax.random.split(key, 4)
        return {
            "controller": init_lstm_cell(k_ctrl, input_size + ways + reads_size, hidden_size),
            "key": _dense(k_key, hidden_size, reads_size),
            "gate": _dense(k_gate, hidden_size, heads),
            "out": _dense(k_out, hidden_size + reads_size, ways),
            "memory": {
                "decay_logit": jnp.asarray(math.log(decay / (1 - decay)), jnp.float32),
                "log_strength": jnp.full((heads,), math.log(strength), jnp.float32),
            },
        }

    def predict(theta: Theta, episode: Episode, key: jax.Array) -> jax.Array:
        return _sequence(config, theta, episode, key)[2]

    def loss(theta: Theta, episode: Episode, key: jax.Array) -> jax.Array:
        support_logits, labels, query_logits = _sequence(config, theta, episode, key)
        logits = jnp.concatenate([support_logits, query_logits])
        targets = jnp.concatenate([labels, episode.y_query])
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

    config = dict(
        ways=ways,
        input_size=input_size,
        hidden_size=hidden_size,
        slots=slots,
        slot_size=slot_size,
        heads=heads,
        decay=decay,
        strength=strength,
    )
    return EpisodicLearner(
        name="memory_augmented", config=config, init=init, predict=predict, loss=loss
    )


@dataclasses.dataclass(frozen=True)
class MANNOptions:
    """The memory-augmented network's options (see :func:`memory_augmented_network`)."""

    controller_size: int = option(200, "MANN: LSTM controller units", check=checks.positive_int)
    memory_slots: int = option(128, "MANN: memory rows", check=checks.positive_int)
    slot_size: int = option(40, "MANN: width of a memory row", check=checks.positive_int)
    read_heads: int = option(4, "MANN: read heads", check=checks.positive_int)


def _build(lopt, family: TaskFamily, options: MANNOptions) -> EpisodicLearner:
    del lopt
    features, ways = episode_shape(family)
    return memory_augmented_network(
        features,
        ways,
        hidden_size=options.controller_size,
        slots=options.memory_slots,
        slot_size=options.slot_size,
        heads=options.read_heads,
    )


ENTRY = Entry(
    "mann",
    _build,
    MANNOptions,
    "θ is an LSTM controller with an LRUA memory; labels arrive a step late (Santoro et al. 2016)",
    frozenset({"episodic"}),
)
