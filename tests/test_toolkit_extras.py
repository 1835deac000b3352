"""The toolkit's three extra strategies: ActiveLearningByLearning (EXP4.P over LeastConfidence and
the greedy k-center), BaselineSampling (a k-DPP over BADGE's gradient embeddings) and MCADL: each
selection rule on a case whose answer is known."""

import itertools
import math
import tracemalloc

import numpy as np
import pytest
import torch
from conftest import TinyNet, tiny_context, tiny_data

from utils.core.data import BatchTransform, ImageData, TensorImages
from utils.core.distributed import Dist
from utils.core.errors import UserError
from utils.protocols.deepal import DeepAL
from utils.protocols.rethinking import Rethinking
from utils.samplers import (
    QueryContext,
    exp4p_probs,
    exp4p_update,
    get_strategy,
    iw_accuracy,
    kcenter_greedy,
    kdpp_select,
    least_confidence_scores,
    mcadl_scores,
    pixel_neighbour_terms,
    top_k,
    top_mass_uncertainty,
)
from utils.samplers.dpp import SwapChain, gradient_factors, independent_start, kdpp_iterations
from utils.samplers.mcadl import class_weights
from utils.samplers.registry import Need

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_toolkit_names_and_aliases_reach_the_three_strategies():
    assert get_strategy("ActiveLearningByLearning") is get_strategy("albl")
    assert get_strategy("BaselineSampling") is get_strategy("kdpp") is get_strategy("baseline")
    assert get_strategy("MCADL") is get_strategy("mcadl")
    assert get_strategy("albl").needs == {Need.STATE} and get_strategy("mcadl").needs == {Need.STATE}
    assert get_strategy("BaselineSampling").needs == frozenset()
    for name in ("albl", "MCADL"):  # a script without a per-trial state refuses them before anything runs
        with pytest.raises(UserError, match="needs a state kept across a trial's queries, which x.py does not"):
            get_strategy(name, serves={Need.MC_DROPOUT}, where="x.py")
    for protocol in (DeepAL, Rethinking):
        assert not get_strategy("albl").missing(protocol.SERVES) and not get_strategy("mcadl").missing(
            protocol.SERVES)


# ------------------------------------------------------------------------ ALBL: EXP4.P

def test_exp4p_probabilities_and_update_on_a_hand_computed_example():
    # two experts, p_min = 1 / (10 K) = 0.05: p = 0.9 w / W + 0.05
    p = exp4p_probs(torch.log(torch.tensor([1.0, 3.0])), 0.05)
    assert torch.allclose(p, torch.tensor([0.275, 0.725], dtype=torch.float64))
    # expert 1 drawn (p = 0.725), reward 0.5, delta 0.1, T = 4: sqrt(ln(2 / 0.1) / (2 * 4)) = 0.6119367
    # log w_0 += 0.025 * (0 + 0.6119367 / 0.275) = 0.0556306
    # log w_1 += 0.025 * (0.5 / 0.725 + 0.6119367 / 0.725) = 0.0383427
    new = exp4p_update(torch.log(torch.tensor([1.0, 3.0])), p, 1, 0.5, 0.05, 0.1, 4)
    assert torch.allclose(new - torch.log(torch.tensor([1.0, 3.0], dtype=torch.float64)),
                          torch.tensor([0.0556306, 0.0383427], dtype=torch.float64), atol=1e-7)
    # from equal weights: expert 0 drawn (p = 0.5), reward 0.8, T = 10: sqrt(ln 20 / 20) = 0.3870228
    new = exp4p_update(torch.zeros(2), torch.tensor([0.5, 0.5]), 0, 0.8, 0.05, 0.1, 10)
    assert torch.allclose(new, torch.tensor([0.025 * (1.6 + 2 * 0.3870228), 0.025 * 2 * 0.3870228],
                                            dtype=torch.float64), atol=1e-8)
    with pytest.raises(ValueError):
        exp4p_probs(torch.zeros(2), 0.6)  # p_min above 1 / K


def test_iw_accuracy_weights_each_queried_label_by_its_inverse_probability():
    # weights 2, 20, 1: (2 + 1) / 23
    assert iw_accuracy(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.5, 0.05, 1.0])) == pytest.approx(3 / 23)


@pytest.mark.parametrize("good", [0, 1])
def test_exp4p_moves_to_the_expert_whose_draws_are_rewarded(good):
    for seed in range(3):
        rng, log_w, horizon, trace = np.random.default_rng(seed), torch.zeros(2), 30, []
        for _ in range(horizon):
            p = exp4p_probs(log_w, 0.05)
            drawn = int(rng.choice(2, p=p.numpy()))
            log_w = exp4p_update(log_w, p, drawn, float(drawn == good), 0.05, 0.1, horizon)
            trace.append(float(exp4p_probs(log_w, 0.05)[good]))
        assert 0.5 < trace[9] < trace[-1] and trace[-1] > 0.58  # slowly: the learning rate is p_min / 2


def _albl_round(model, data, labeled, query_size, state, seed, rng=None):
    pool = np.setdiff1d(data.train_idx, labeled)
    ctx = QueryContext(model, data, labeled, pool, query_size, Dist(), batch_size=64,
                       rng=rng or np.random.default_rng(seed), extras={"state": state})
    return pool, ctx, get_strategy("albl").select(ctx)


class Alternating:
    """An RNG whose expert draws alternate 0, 1, 0, ... whatever the probabilities."""

    def __init__(self):
        self.draws = 0

    def choice(self, k, p):
        self.draws += 1
        return (self.draws - 1) % k


def test_albl_queries_one_experts_batch_and_rewards_it_at_the_next_query():
    data, model = tiny_data(120), TinyNet().eval()
    labeled, state = np.arange(0, 120, 10), {}
    pool, ctx, first = _albl_round(model, data, labeled, 6, state, seed=0)
    albl = state["albl"]
    lc = pool[top_k(least_confidence_scores(ctx.probs()), 6)]
    kc = pool[kcenter_greedy(ctx.features(), ctx.labeled_features(), 6).numpy()]
    expert = int(albl["chosen"][0])
    assert np.array_equal(first, [lc, kc][expert])  # the whole batch is one expert's
    assert len(albl["rewards"]) == 0 and albl["pending"]["expert"] == expert
    assert albl["horizon"] == math.ceil(len(pool) / 6)
    both = np.isin(first, lc) & np.isin(first, kc)  # proposed by both experts: probability 1
    assert torch.allclose(albl["inclusion"], torch.tensor(np.where(both, 1.0, 0.5), dtype=torch.float64))

    # the next query: the reward is the IW-ACC of the (same) model on the first query's labels
    labeled = np.concatenate([labeled, first])
    _, ctx, _ = _albl_round(model, data, labeled, 6, state, seed=1)
    correct = ctx.predict(lambda out, y: (out.logits.argmax(1) == y).float(), first)
    reward = iw_accuracy(correct, torch.tensor(np.where(both, 1.0, 0.5)))
    assert albl["rewards"].tolist() == pytest.approx([reward])
    expected = exp4p_update(torch.zeros(2), torch.tensor([0.5, 0.5]), expert, reward, 0.05, 0.1, albl["horizon"])
    assert torch.allclose(albl["probs"][1], exp4p_probs(expected, 0.05))


def test_albl_state_survives_a_checkpoint(tmp_path):
    """The trial checkpoint is read back with torch.load(weights_only=True): the state holds only
    tensors and plain values, and the run continues as if never stopped."""
    data, model = tiny_data(90), TinyNet().eval()
    labeled, state = np.arange(0, 90, 9), {}
    _, _, picks = _albl_round(model, data, labeled, 5, state, seed=0)
    labeled = np.concatenate([labeled, picks])
    torch.save(state, tmp_path / "state.pt")
    restored = torch.load(tmp_path / "state.pt", weights_only=True)
    _, _, straight = _albl_round(model, data, labeled, 5, state, seed=1)
    _, _, resumed = _albl_round(model, data, labeled, 5, restored, seed=1)
    assert np.array_equal(straight, resumed) and torch.equal(state["albl"]["log_weights"],
                                                             restored["albl"]["log_weights"])


def test_albl_leaves_out_labels_not_given_yet():
    data, model, state = tiny_data(60), TinyNet().eval(), {}
    labeled = np.arange(0, 60, 6)
    _albl_round(model, data, labeled, 4, state, seed=0)
    _albl_round(model, data, labeled, 4, state, seed=1)  # the first query's images were discarded
    assert len(state["albl"]["rewards"]) == 0 and len(state["albl"]["probs"]) == 2
    assert torch.equal(state["albl"]["probs"][1], state["albl"]["probs"][0])  # no reward, no update


def test_albl_weights_move_to_the_expert_whose_picks_the_model_gets_right():
    """LeastConfidence's picks are labeled with the model's prediction and the other images with
    another class, so queries by LeastConfidence raise the IW-ACC and those by k-center lower it.
    With the experts drawn in turn (to see the rule, not the luck of the draws), every
    LeastConfidence query is rewarded above every k-center one and the weights move to it."""
    data, model = tiny_data(400, seed=1), TinyNet().eval()
    probs = QueryContext(model, data, np.zeros(0, dtype=np.int64), data.train_idx, 1, Dist()).probs()
    predicted = probs.argmax(1)
    easy = torch.as_tensor(top_k(least_confidence_scores(probs), 70))  # more than LC will query
    targets = (predicted + 1) % 3
    targets[easy] = predicted[easy]
    data.train.targets = targets
    labeled, state, rng = np.arange(0, 400, 20), {}, Alternating()
    for query in range(12):
        _, _, picks = _albl_round(model, data, labeled, 5, state, query, rng)
        labeled = np.concatenate([labeled, picks])
    albl = state["albl"]
    assert albl["chosen"].tolist() == [0, 1] * 6
    rewards = albl["rewards"].numpy()  # rewards[j]: query j's, measured at query j + 1
    assert rewards[0::2].min() > rewards[1::2].max()
    p_lc = albl["probs"][:, 0].numpy()
    assert albl["log_weights"][0] > albl["log_weights"][1] and (np.diff(p_lc[::2]) > 0).all() and p_lc[-1] > 0.5


# ------------------------------------------------------------------------ BaselineSampling: k-DPP


def _factors(n, c=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, c)), rng.standard_normal((n, d))


def _kernel(a, h):
    return (a @ a.T) * (h @ h.T)  # = Phi Phi^T with Phi_i = a_i (x) h_i


def test_the_factorised_kernel_is_the_gram_matrix_of_the_gradient_embeddings():
    probs = torch.softmax(torch.randn(7, 3, generator=torch.Generator().manual_seed(0)), 1)
    emb = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    a, h = gradient_factors(probs, emb)
    onehot = torch.nn.functional.one_hot(probs.argmax(1), 3).double()
    phi = ((probs.double() - onehot)[:, :, None] * emb.double()[:, None, :]).flatten(1)  # [N, C * D]
    assert np.allclose(_kernel(a, h), (phi @ phi.T).numpy())


def test_a_swaps_acceptance_ratio_is_the_determinant_ratio():
    a, h = _factors(12)
    kernel = _kernel(a, h)
    chain = SwapChain(a, h, np.array([0, 3, 5, 8]))
    rng = np.random.default_rng(0)
    for _ in range(30):
        r, v = int(rng.integers(4)), int(rng.choice(np.flatnonzero(~chain.in_set)))
        swapped = chain.members.copy()
        swapped[r] = v
        direct = np.linalg.det(kernel[np.ix_(swapped, swapped)]) / np.linalg.det(
            kernel[np.ix_(chain.members, chain.members)])
        ratio, w, z = chain.ratio(r, v)
        assert ratio == pytest.approx(direct, rel=1e-8)
        chain.swap(r, v, w, z)  # every swap, accepted or not: the updated inverse stays exact
        assert np.allclose(chain.inverse, np.linalg.inv(kernel[np.ix_(chain.members, chain.members)]), atol=1e-8)


def test_the_chain_has_the_kdpp_as_its_stationary_distribution():
    """The exact transition matrix over all 3-subsets of 6 points, built from the chain's own
    acceptance ratios (u uniform in S, v uniform outside, accept min(1, ratio)): the k-DPP
    pi(S) ~ det K_S satisfies pi P = pi (and detailed balance)."""
    n, k = 6, 3
    a, h = _factors(n, seed=2)
    kernel = _kernel(a, h)
    states = [tuple(s) for s in itertools.combinations(range(n), k)]
    where = {s: i for i, s in enumerate(states)}
    pi = np.array([np.linalg.det(kernel[np.ix_(s, s)]) for s in states])
    pi /= pi.sum()
    moves = np.zeros((len(states), len(states)))
    for i, s in enumerate(states):
        chain = SwapChain(a, h, np.array(s))
        for r in range(k):
            for v in sorted(set(range(n)) - set(s)):
                target = tuple(sorted(set(s) - {s[r]} | {v}))
                moves[i, where[target]] += min(1.0, chain.ratio(r, v)[0]) / (k * (n - k))
        moves[i, i] = 1 - moves[i].sum()
    assert np.allclose(pi @ moves, pi, atol=1e-12)
    assert np.allclose(pi[:, None] * moves, (pi[:, None] * moves).T, atol=1e-12)


def test_kdpp_select_follows_the_direct_determinant_chain_step_by_step():
    """The same random draws through a chain that forms the gradient embeddings and takes every
    determinant directly (the toolkit's way): the same picks."""
    probs = torch.softmax(3 * torch.randn(60, 4, generator=torch.Generator().manual_seed(3)), 1)
    emb = torch.randn(60, 6, generator=torch.Generator().manual_seed(4))
    k = 8
    ours = kdpp_select(probs, emb, k, np.random.default_rng(5))
    a, h = gradient_factors(probs, emb)
    kernel = _kernel(a, h)
    rng = np.random.default_rng(5)
    members = independent_start(a, h, k, rng)
    assert np.linalg.det(kernel[np.ix_(members, members)]) > 0
    iterations = kdpp_iterations(k)
    positions, outside_at, uniforms = rng.integers(k, size=iterations), rng.integers(60 - k, size=iterations), \
        rng.random(iterations)
    outside = np.setdiff1d(np.arange(60), members)
    for r, j, u in zip(positions, outside_at, uniforms):
        swapped = members.copy()
        swapped[r] = outside[j]
        if u < np.linalg.det(kernel[np.ix_(swapped, swapped)]) / np.linalg.det(kernel[np.ix_(members, members)]):
            outside[j] = members[r]
            members = swapped
    assert np.array_equal(ours, members)
    assert kdpp_iterations(100) == int(5 * 100 * math.log(100)) - 1 == 2301  # the toolkit's range(1, 5 n ln n)


def test_kdpp_samples_follow_the_determinants():
    """Final states of 3,000 short chains on 5 points, k = 2: frequencies ~ det K_S (the bound is
    above the 99.99 % quantile of the total variation of 3,000 exact draws, 0.042)."""
    probs = torch.softmax(torch.randn(5, 3, generator=torch.Generator().manual_seed(6)), 1)
    emb = torch.randn(5, 4, generator=torch.Generator().manual_seed(7))
    a, h = gradient_factors(probs, emb)
    kernel = _kernel(a, h)
    pairs = list(itertools.combinations(range(5), 2))
    expected = np.array([np.linalg.det(kernel[np.ix_(p, p)]) for p in pairs])
    expected /= expected.sum()
    counts = np.zeros(len(pairs))
    for seed in range(3000):
        counts[pairs.index(tuple(sorted(kdpp_select(probs, emb, 2, np.random.default_rng(seed), 40))))] += 1
    assert 0.5 * np.abs(counts / counts.sum() - expected).sum() < 0.045  # total variation


def test_kdpp_never_takes_exact_duplicates_together():
    rng = np.random.default_rng(0)
    emb = np.repeat(rng.standard_normal((12, 16)), 2, axis=0)  # 12 points in general position, each twice
    probs = torch.tensor([[0.6, 0.4]] * 24)
    for seed in range(10):
        chosen = kdpp_select(probs, torch.from_numpy(emb), 8, np.random.default_rng(seed))
        assert len(set((chosen // 2).tolist())) == 8  # one of each pair at most


def test_kdpp_spreads_over_clusters():
    rng = np.random.default_rng(0)
    centres = np.linalg.qr(rng.standard_normal((16, 6)))[0].T  # 6 orthonormal directions
    emb = torch.from_numpy(np.repeat(centres, 10, axis=0) + 0.05 * rng.standard_normal((60, 16)))
    probs = torch.tensor([[0.6, 0.4]] * 60)
    clusters = np.repeat(np.arange(6), 10)
    covered = [len(set(clusters[kdpp_select(probs, emb, 6, np.random.default_rng(s))])) for s in range(20)]
    uniform = [len(set(clusters[np.random.default_rng(s).choice(60, 6, replace=False)])) for s in range(20)]
    assert np.mean(covered) >= 5.2 and np.mean(covered) > np.mean(uniform) + 1  # uniform: 4.0 expected


def test_kdpp_memory_is_linear_in_the_pool():
    n, c, d, k = 5000, 10, 128, 50
    generator = torch.Generator().manual_seed(0)
    probs, emb = torch.softmax(torch.randn(n, c, generator=generator), 1), torch.randn(n, d, generator=generator)
    tracemalloc.start()
    kdpp_select(probs, emb, k, np.random.default_rng(0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2 * 8 * n * (c + d + 4) + 64 * 8 * k * k  # two copies of the factors plus k x k blocks
    assert peak < 8 * n * n / 10  # far below one N x N kernel


def test_kdpp_takes_what_is_there_when_the_embeddings_span_too_few_dimensions():
    probs = torch.tensor([[0.7, 0.3]] * 6)
    emb = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 1.0], [0.0, 0.0]])  # rank 2
    chosen = kdpp_select(probs, emb, 3, np.random.default_rng(0))
    assert len(set(chosen.tolist())) == 3
    a, h = gradient_factors(probs, emb)
    assert len(independent_start(a, h, 3, np.random.default_rng(0))) == 2


# ------------------------------------------------------------------------ MCADL

def test_top_mass_uncertainty_on_known_distributions():
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0, 0.0],  # k = 1 -> 2: 1 - |0.7 - 0.2| / 2
                          [0.28, 0.2, 0.18, 0.17, 0.17],  # k = 3: mean 0.22, deviations 0.06, 0.02, 0.04
                          [0.2, 0.2, 0.2, 0.2, 0.2],  # k = 3, all equal
                          [1.0, 0.0, 0.0, 0.0, 0.0]])  # certain: 1 - 1/2
    assert torch.allclose(top_mass_uncertainty(probs.double()), torch.tensor([0.75, 0.96, 1.0, 0.5],
                                                                             dtype=torch.float64))


def test_class_weights_follow_the_gains_then_the_weak_classes():
    gains = class_weights(torch.tensor([0.2, 0.6, 0.9]), torch.tensor([0.1, 0.7, 0.5]))
    assert torch.allclose(gains, torch.tensor([0.2, 0.0, 0.8], dtype=torch.float64))  # (0.1, 0, 0.4) / 0.5
    assert torch.allclose(class_weights(torch.tensor([0.2, 0.3]), torch.tensor([0.5, 0.5])),
                          torch.tensor([0.5, 0.5], dtype=torch.float64))  # nothing improved: uniform
    weak = class_weights(torch.tensor([0.5, 1.0]), torch.tensor([0.0, 0.0]))
    assert torch.allclose(weak, torch.tensor([2 / 3, 1 / 3], dtype=torch.float64))  # (2, 1) / 3


def test_pixel_terms_in_blocks_equal_the_full_similarity_matrix():
    generator = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (23, 12), dtype=torch.uint8, generator=generator)
    labeled = torch.randint(0, 256, (17, 12), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 4, (17,), generator=generator)
    unit = lambda x: torch.nn.functional.normalize(x.double(), dim=1)  # noqa: E731
    sim = unit(pool) @ unit(labeled).T  # the toolkit's cosine matrix (pool x labeled)
    votes = torch.nn.functional.one_hot(labels[sim.topk(5, dim=1).indices], 4).sum(1)
    pseudo = votes.argmax(1)
    same = labels[None] == pseudo[:, None]
    density = 1 - (sim * same).sum(1) / same.sum(1)
    similarity = 1 - sim.masked_fill(~same, -2).max(1).values
    for chunk in (7, 50, 2**24):  # blocks of 2 x 3, 7 x 7 and everything at once
        got = pixel_neighbour_terms(pool, labeled, labels, 4, chunk_elements=chunk)
        assert torch.equal(got[0], pseudo)
        assert torch.allclose(got[1].double(), density, atol=1e-6)
        assert torch.allclose(got[2].double(), similarity, atol=1e-6)


def test_mcadl_scores_combine_the_four_criteria_with_the_decaying_weights():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    scores = mcadl_scores(probs, torch.tensor([0, 2]), torch.tensor([0.5, 0.2]), torch.tensor([0.1, 0.4]),
                          torch.tensor([0.2, 0.3, 0.5]), train_accuracy=0.8)
    alpha = 0.9 * math.exp(-0.8)  # = beta
    u = [1 - 0.25, 1 - 0.025]  # k = 2 for both: 1 - |p1 - p2| / 2
    expected = [alpha * 0.3 + (1 - alpha) * (alpha * u[0] + (1 - alpha) * 0.2),
                alpha * 0.3 + (1 - alpha) * (alpha * u[1] + (1 - alpha) * 0.5)]
    assert torch.allclose(scores, torch.tensor(expected, dtype=torch.float64))


def _pixel_data(images, targets):
    dataset = TensorImages(torch.as_tensor(images, dtype=torch.uint8).view(-1, 1, 4, 4), targets)
    transform = BatchTransform((0.5,), (0.25,))
    n = len(targets)
    return ImageData("pixels", dataset, dataset, 3, 1, 4, transform, transform, np.arange(n), np.arange(n))


def test_mcadl_queries_the_images_least_like_their_classes_labeled_images():
    """Labeled: two images of class 0, pixel 0 lit and pixel 1 lit. Pool, with the same predicted
    probabilities (equal uncertainty; every pseudo-class is 0, so equal class weights):
    a copy of the first (density 1 - 1/2, similarity 0: 0.25), pixels 0 and 1 (both cosines
    1/sqrt 2: 0.2929), pixels 0 and 2 (1 - 0.3536 and 1 - 0.7071: 0.4697), pixel 2 alone (1)."""
    lit = [[0], [1], [0], [0, 1], [0, 2], [2]]
    images = np.zeros((6, 16))
    for row, pixels in enumerate(lit):
        images[row, pixels] = 200
    data = _pixel_data(images, [0, 0, 1, 1, 2, 2])
    ctx = QueryContext(TinyNet().eval(), data, np.array([0, 1]), np.arange(2, 6), 2, Dist(),
                       rng=np.random.default_rng(0), extras={"state": {}})
    ctx._cache["pool"] = torch.cat([torch.tensor([[0.6, 0.3, 0.1]] * 4), torch.zeros(4, 8)], 1)
    scores = get_strategy("MCADL").scores(ctx)
    r = 1 / math.sqrt(2)
    data_terms = torch.tensor([0.25, 1 - r, 0.5 * (1 - r / 2) + 0.5 * (1 - r), 1.0], dtype=torch.float64)
    assert torch.argsort(scores, descending=True).tolist() == [3, 2, 1, 0]
    differences = (scores - scores[0]) / (scores[1] - scores[0])  # an affine function of the data terms
    assert torch.allclose(differences, (data_terms - data_terms[0]) / (data_terms[1] - data_terms[0]))
    assert get_strategy("MCADL").select(ctx).tolist() == [5, 4]


def test_mcadl_keeps_the_per_class_accuracy_for_the_next_query():
    ctx = tiny_context(np.arange(20, 60), 5)
    get_strategy("MCADL").select(ctx)
    first = ctx.extras["state"]["mcadl_last_accuracy"]
    assert first.shape == (3,) and ((first >= 0) & (first <= 1)).all()
    later = tiny_context(np.arange(25, 60), 5)
    later.extras["state"] = ctx.extras["state"]
    get_strategy("MCADL").select(later)
    assert later.extras["state"]["mcadl_last_accuracy"] is not first
