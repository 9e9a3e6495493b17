"""Matching networks, prototypical networks and the MANN against independent computations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt as mo
from metaopt.learners.embedding import mlp_embedding
from metaopt.learners.episodic import classify
from metaopt.learners.mann import instance_numbers, sequence_logits
from metaopt.learners.matching import attention_lstm, attention_readout, context_support
from metaopt.learners.memory import MEMORY_INIT, init_memory, least_used, memory_access
from metaopt.learners.prototypical import prototype_logits, prototypes
from metaopt.optimizers.lstm import init_lstm_cell
from metaopt.tasks.datasets import digits, from_arrays
from metaopt.tasks.fewshot import Episode, check_episode, fewshot_family
from tests.conformance.references import reference_for


def np_cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_attention_readout_matches_a_hand_written_loop():
    rng = np.random.default_rng(0)
    queries, support = rng.normal(size=(4, 6)), rng.normal(size=(7, 6))
    labels, scale = np.array([0, 1, 2, 0, 1, 2, 2]), 3.0
    got = np.exp(attention_readout(jnp.asarray(queries), jnp.asarray(support), labels, 3, scale))
    for q in range(4):
        weights = np.array([np.exp(scale * np_cosine(queries[q], s)) for s in support])
        weights /= weights.sum()
        expected = np.zeros(3)
        for i, y in enumerate(labels):
            expected[y] += weights[i]
        # float32 cosines and exponentials: agreement to a few units of 1e-7 per term.
        np.testing.assert_allclose(got[q], expected, rtol=1e-5, atol=1e-6)


def np_lstm(w, x, h, c):
    z = np.concatenate([x, h]) @ np.concatenate([w["wx"], w["wh"]]) + w["b"]
    i, f, g, o = np.split(z, 4)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c = sig(f) * c + sig(i) * np.tanh(g)
    return sig(o) * np.tanh(c), c


def test_full_context_embeddings_match_a_numpy_loop():
    size, steps = 3, 2
    keys = jax.random.split(jax.random.key(0), 3)
    fw, bw = init_lstm_cell(keys[0], size, size), init_lstm_cell(keys[1], size, size)
    att = init_lstm_cell(keys[2], size, size, recurrent_size=2 * size)
    rng = np.random.default_rng(1)
    support, query = rng.normal(size=(4, size)), rng.normal(size=size)
    w = {k: jax.tree.map(np.asarray, v) for k, v in {"fw": fw, "bw": bw, "att": att}.items()}
    # g(x_i, S): forward and backward LSTM states plus the embedding itself.
    h, c, forward = np.zeros(size), np.zeros(size), []
    for x in support:
        h, c = np_lstm(w["fw"], x, h, c)
        forward.append(h)
    h, c, backward = np.zeros(size), np.zeros(size), []
    for x in support[::-1]:
        h, c = np_lstm(w["bw"], x, h, c)
        backward.append(h)
    g = support + np.array(forward) + np.array(backward[::-1])
    got_g = np.asarray(context_support({"fw": fw, "bw": bw}, jnp.asarray(support)))
    np.testing.assert_allclose(got_g, g, rtol=1e-5, atol=1e-6)
    # f(x̂, S): the attention LSTM, r read from h by a softmax over dot products.
    read = lambda h: (np.exp(g @ h) / np.exp(g @ h).sum()) @ g  # noqa: E731
    h, c = np.zeros(size), np.zeros(size)
    r = read(h)
    for _ in range(steps):
        h_hat, c = np_lstm(w["att"], query, np.concatenate([h, r]), c)
        h = h_hat + query
        r = read(h)
    got_f = np.asarray(attention_lstm(att, jnp.asarray(query), jnp.asarray(g), steps))
    np.testing.assert_allclose(got_f, h, rtol=1e-5, atol=1e-6)


def test_prototypes_are_numpy_class_means_and_logits_their_distances():
    rng = np.random.default_rng(2)
    embedded, labels = rng.normal(size=(9, 4)), np.array([2, 0, 1, 1, 0, 2, 2, 0, 1])
    means = np.stack([embedded[labels == k].mean(axis=0) for k in range(3)])
    got = np.asarray(prototypes(jnp.asarray(embedded), jnp.asarray(labels), 3))
    np.testing.assert_allclose(got, means, rtol=1e-6, atol=1e-6)  # float32 sums of 3 terms
    queries = rng.normal(size=(5, 4))
    expected = -(((queries[:, None, :] - means[None]) ** 2).sum(-1))
    got = prototype_logits(jnp.asarray(queries), jnp.asarray(means))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_prototypical_network_predicts_from_the_embedded_class_means():
    fam = fewshot_family(digits(), classes=range(5), ways=5, shots=3, query_shots=2)
    emb = mlp_embedding(64, (16, 8))
    learner = mo.prototypical_network(emb, ways=5)
    theta = learner.init(jax.random.key(0))
    ep = fam.sample(jax.random.key(1))
    support = np.asarray(emb.apply(theta, ep.x_support))
    query = np.asarray(emb.apply(theta, ep.x_query))
    y = np.asarray(ep.y_support)
    means = np.stack([support[y == k].mean(axis=0) for k in range(5)])
    expected = -(((query[:, None, :] - means[None]) ** 2).sum(-1))
    got = learner.predict(theta, ep, None)
    # distances of order 10-100 in float32: relative agreement to 1e-5.
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def np_memory_step(memory, usage, read_w, keys, gates, strengths, decay):
    """Santoro et al.'s LRUA step, written from the paper's equations."""
    heads, slots = keys.shape[0], memory.shape[0]
    order = np.argsort(usage, kind="stable")
    lu = np.zeros(slots)
    lu[order[:heads]] = 1.0
    alpha = 1 / (1 + np.exp(-gates))
    write_w = alpha[:, None] * read_w + (1 - alpha[:, None]) * lu[None]
    memory = memory.copy()
    memory[np.argmin(usage)] = 0.0
    for h in range(heads):
        memory += np.outer(write_w[h], keys[h])
    new_read = np.zeros((heads, slots))
    for h in range(heads):
        sims = np.array([np_cosine(keys[h], memory[i]) for i in range(slots)])
        e = np.exp(strengths[h] * sims)
        new_read[h] = e / e.sum()
    reads = new_read @ memory
    usage = decay * usage + new_read.sum(0) + write_w.sum(0)
    return reads, memory, usage, new_read


def test_memory_read_and_lru_write_match_a_numpy_reference():
    heads, slots, size, decay = 2, 6, 3, 0.9
    rng = np.random.default_rng(3)
    memory, usage, read_w = np.full((slots, size), MEMORY_INIT), np.zeros(slots), np.zeros((2, 6))
    with jax.enable_x64(True):
        state = jax.tree.map(lambda x: x.astype(jnp.float64), init_memory(slots, size, heads))
        for _ in range(8):  # more steps than slots, so least-used slots are reused
            keys, gates = rng.normal(size=(heads, size)), rng.normal(size=heads)
            strengths = np.exp(rng.normal(size=heads))
            reads, state = memory_access(
                state, jnp.asarray(keys), jnp.asarray(gates), jnp.asarray(strengths), decay
            )
            want, memory, usage, read_w = np_memory_step(
                memory, usage, read_w, keys, gates, strengths, decay
            )
            # Both in float64, the same arithmetic in another order: 1e-10 relative.
            for got, expected in (
                (reads, want),
                (state.memory, memory),
                (state.usage, usage),
                (state.read_weights, read_w),
            ):
                np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_least_used_matches_a_stable_sort_with_ties():
    rng = np.random.default_rng(4)
    for _ in range(20):
        usage = rng.integers(0, 4, size=10).astype(np.float32)  # many ties
        n = int(rng.integers(1, 10))
        expected = np.zeros(10)
        expected[np.argsort(usage, kind="stable")[:n]] = 1.0
        np.testing.assert_array_equal(least_used(jnp.asarray(usage), n), expected)


def test_instance_numbers_count_earlier_presentations():
    labels = np.random.default_rng(5).integers(0, 3, size=12)
    expected = [1 + int(np.sum(labels[:t] == labels[t])) for t in range(12)]
    assert instance_numbers(jnp.asarray(labels)).tolist() == expected


def test_the_mann_sees_each_label_one_step_late():
    fam = fewshot_family(digits(), classes=range(5), ways=5, shots=2, query_shots=1)
    learner = mo.memory_augmented_network(64, ways=5, hidden_size=8, slots=16, heads=1)
    theta = learner.init(jax.random.key(0))
    ep, key = fam.sample(jax.random.key(1)), jax.random.key(2)
    order = np.asarray(jax.random.permutation(key, 10))
    s0, labels, q0 = sequence_logits(learner, theta, ep, key)
    assert np.array_equal(labels, np.asarray(ep.y_support)[order])
    for t in (3, 9):  # relabel the example presented at step t
        y = np.asarray(ep.y_support).copy()
        y[order[t]] = (y[order[t]] + 1) % 5
        s1, _, q1 = sequence_logits(learner, theta, ep._replace(y_support=jnp.asarray(y)), key)
        np.testing.assert_array_equal(s1[: t + 1], s0[: t + 1])  # not seen up to step t
        if t < 9:
            assert not np.allclose(s1[t + 1], s0[t + 1])  # seen at step t + 1
        assert not np.allclose(q1, q0)  # the queries come after every label


def tiny_family():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(18, 2, 2, 1)).astype(np.float32)
    return fewshot_family(
        from_arrays(x, np.arange(18) % 3), classes=range(3), ways=2, shots=2, query_shots=2
    )


LEARNERS = {
    "prototypical": lambda: mo.prototypical_network(mlp_embedding(4, (3,)), ways=2),
    "matching": lambda: mo.matching_network(mlp_embedding(4, (3,)), ways=2),
    "matching_fce": lambda: mo.matching_network(
        mlp_embedding(4, (3,)), ways=2, full_context=True, fce_steps=2
    ),
    "mann": lambda: mo.memory_augmented_network(
        4, ways=2, hidden_size=3, slots=5, slot_size=2, heads=2
    ),
}


@reference_for("episodic")
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_episodic_meta_gradient_matches_finite_differences(name):
    with jax.enable_x64(True):
        learner = LEARNERS[name]()
        est = mo.episodic(learner, tiny_family(), num_tasks=2)
        theta = jax.tree.map(lambda x: x.astype(jnp.float64), learner.init(jax.random.key(0)))
        key = jax.random.key(1)
        grad, _, _ = est.estimate(theta, est.init(theta, None), key)

        def loss(th):
            return est.estimate(th, est.init(th, None), key)[2]["meta_loss"]

        leaves, treedef = jax.tree.flatten(theta)
        eps = 1e-6
        for seed in range(2):
            keys = jax.random.split(jax.random.key(10 + seed), len(leaves))
            v = treedef.unflatten(
                [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
            )
            pairs = zip(jax.tree.leaves(grad), jax.tree.leaves(v), strict=True)
            analytic = sum(jnp.vdot(g, d) for g, d in pairs)
            plus = jax.tree.map(lambda t, d: t + eps * d, theta, v)
            minus = jax.tree.map(lambda t, d: t - eps * d, theta, v)
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
            # Central differences in float64 with eps=1e-6: truncation ~eps² and rounding
            # ~1e-16/eps are both below 1e-7 of a derivative of order one.
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


def test_prototypical_network_meta_training_raises_query_accuracy():
    fam = fewshot_family(digits(), classes=range(5), ways=5, shots=1, rotations=4)
    learner = mo.prototypical_network(mlp_embedding(64), ways=5)
    theta0 = learner.init(jax.random.key(0))
    res = mo.meta_train(
        mo.episodic(learner, fam, num_tasks=16),
        jax.random.key(0),
        num_steps=60,
        meta_optimizer=optax.adam(1e-3),
        progress=False,
    )
    accuracies = mo.evaluation.episode_accuracies
    before = accuracies(learner, theta0, fam, jax.random.key(3), num_tasks=200)
    after = accuracies(learner, res.theta, fam, jax.random.key(3), num_tasks=200)
    # Episodes of the meta-training classes (the digits 0-4 and their rotations); 200
    # episodes of 75 queries put the standard error near 0.01, far below the margin.
    assert float(after.mean()) > float(before.mean()) + 0.05
    assert res.history[-1]["meta_loss"] < res.history[0]["meta_loss"]


def test_bad_episodes_are_errors_that_name_the_argument():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match="y_query has classes \\[2\\]"):
        check_episode(Episode(x, np.array([0, 1, 0, 1]), x[:1], np.array([2])), 2)
    with pytest.raises(ValueError, match=r"y_support must hold every class 0\.\.2"):
        check_episode(Episode(x, np.array([0, 1, 0, 1]), x[:1], np.array([0])), 3)
    with pytest.raises(ValueError, match="y_support is empty"):
        check_episode(Episode(x[:0], np.zeros(0, int), x[:1], np.array([0])), 2)
    learner = mo.prototypical_network(mlp_embedding(3, (4,)), ways=2)
    theta = learner.init(jax.random.key(0))
    with pytest.raises(ValueError, match="y_support must hold every class"):
        classify(learner, theta, x, np.array([0, 0, 0, 0]), x)
    with pytest.raises(ValueError, match="x_support and x_query"):
        classify(learner, theta, x, np.array([0, 1, 0, 1]), np.zeros((2, 5)))


def test_bad_sizes_are_errors_that_name_the_argument():
    data = digits()
    with pytest.raises(ValueError, match="ways=6 needs at least 6 classes"):
        fewshot_family(data, classes=range(5), ways=6)
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        fewshot_family(data, classes=range(5), ways=5, shots=0)
    with pytest.raises(ValueError, match="ways must be a positive integer"):
        mo.matching_network(mlp_embedding(64), ways=0)
    fam = fewshot_family(data, classes=range(5), ways=3)
    with pytest.raises(ValueError, match=r"does not give 5-way episodes.*ways=5"):
        mo.episodic(mo.prototypical_network(mlp_embedding(64), ways=5), fam, num_tasks=2)
    with pytest.raises(ValueError, match="examples must be \\(n, 10\\)"):
        mo.episodic(mo.prototypical_network(mlp_embedding(10), ways=3), fam, num_tasks=2)
    with pytest.raises(TypeError, match="learner must be an EpisodicLearner"):
        mo.episodic(mo.learned_initialization(fam), fam, num_tasks=2)
    with pytest.raises(ValueError, match="heads \\(3\\) must not exceed slots \\(2\\)"):
        mo.memory_augmented_network(64, ways=5, slots=2, heads=3)
