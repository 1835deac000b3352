"""The 2021-2023 baselines: a known answer for each rule, and a comparison with its reference on the
same inputs (baal for the stochastic family and EPIG; for BAIT, GALAXY and ALFA-Mix the reference's
rule restated below from its code, the file and lines named in each restatement)."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_context

from utils.core.errors import UserError
from utils.samplers import (
    alfamix_candidates,
    alfamix_select,
    bait_select,
    bald_scores,
    entropy_scores,
    epig_scores,
    galaxy_select,
    get_strategy,
    stochastic_log_weights,
    stochastic_select,
)
from utils.samplers.alfamix import alfamix_changes, class_anchors, linear_head
from utils.samplers.bait import fisher_factors, fisher_sum

baal_heuristics = pytest.importorskip("baal.active.heuristics")
baal_stochastics = pytest.importorskip("baal.active.heuristics.stochastics")


def _probabilities(log_weights):
    return torch.softmax(log_weights, 0)


def _random_mc(k, n, c, seed, sharpness=2.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(sharpness * torch.randn(k, n, c, generator=generator, dtype=torch.float64), 2)


# ------------------------------------------------------------------------ stochastic batch acquisition

def test_power_softmax_and_softrank_distributions_by_hand():
    scores = torch.tensor([1.0, 2.0, 4.0])
    assert torch.allclose(_probabilities(stochastic_log_weights(scores, "power", 1.0)),
                          torch.tensor([1, 2, 4], dtype=torch.float64) / 7)
    assert torch.allclose(_probabilities(stochastic_log_weights(scores, "power", 2.0)),
                          torch.tensor([1, 4, 16], dtype=torch.float64) / 21)
    softmax = _probabilities(stochastic_log_weights(torch.tensor([0.0, math.log(2)]), "softmax", 1.0))
    assert torch.allclose(softmax, torch.tensor([1 / 3, 2 / 3], dtype=torch.float64))
    ranks = _probabilities(stochastic_log_weights(torch.tensor([3.0, 1.0, 2.0]), "softrank", 1.0))  # ranks 1, 3, 2
    assert torch.allclose(ranks, torch.tensor([1, 1 / 3, 1 / 2], dtype=torch.float64) / (11 / 6))


def test_gumbel_top_k_draws_without_replacement_as_successive_sampling():
    p = np.array([0.1, 0.2, 0.3, 0.4])
    scores = torch.from_numpy(p)
    counts = {}
    for seed in range(3000):
        pair = stochastic_select(scores, 2, "power", 1.0, torch.Generator().manual_seed(seed)).tolist()
        assert len(set(pair)) == 2
        counts[frozenset(pair)] = counts.get(frozenset(pair), 0) + 1
    for pair, count in counts.items():  # P({i, j}) = p_i p_j / (1 - p_i) + p_j p_i / (1 - p_j)
        i, j = sorted(pair)
        exact = p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])
        assert abs(count / 3000 - exact) < 0.03


def test_power_sampling_never_takes_a_zero_score_while_enough_are_positive():
    scores = torch.tensor([0.0, 0.5, 0.0, 0.2, 0.3])
    def draw(k, seed):
        return set(stochastic_select(scores, k, "power", 1.0, torch.Generator().manual_seed(seed)).tolist())

    assert all(draw(3, seed) == {1, 3, 4} for seed in range(50))
    # 4 of 5 with 3 positive scores: uniform over all, as baal, so a positive one is sometimes left out
    assert any(not {1, 3, 4} <= draw(4, seed) for seed in range(50))


@pytest.mark.parametrize("rule,baal_class", [("power", "PowerSampling"), ("softmax", "GibbsSampling"),
                                             ("softrank", "RankBasedSampling")])
@pytest.mark.parametrize("beta", [1.0, 0.5, 3.0])
def test_stochastic_distributions_match_baal_on_bald_scores(rule, baal_class, beta):
    mc = _random_mc(6, 40, 4, seed=1)
    predictions = mc.permute(1, 2, 0).numpy()  # baal's [N, C, iterations]
    heuristic = getattr(baal_stochastics, baal_class)(baal_heuristics.BALD(), query_size=5, temperature=1 / beta)
    ranks, theirs = heuristic.get_ranks(predictions)
    ours = _probabilities(stochastic_log_weights(bald_scores(mc), rule, beta)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)
    assert len(set(ranks.tolist())) == 5


def test_power_entropy_matches_baal_and_power_margin_uses_the_complement_of_the_margin():
    probs = torch.softmax(2 * torch.randn(30, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64), 1)
    heuristic = baal_stochastics.PowerSampling(baal_heuristics.Entropy(), query_size=3, temperature=0.5)
    _, theirs = heuristic.get_ranks(probs.numpy()[:, :, None])
    ours = _probabilities(stochastic_log_weights(entropy_scores(probs), "power", 2.0)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    top2 = probs.topk(2, 1).values
    margin = 1 - (top2[:, 0] - top2[:, 1])
    ours = _probabilities(stochastic_log_weights(margin, "power", 1.0)).numpy()
    theirs = baal_stochastics.PowerSampling(baal_heuristics.BALD(), 3)._make_distribution(margin.numpy())
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_power_bald_strategy_samples_the_points_with_mutual_information():
    # points 0-2: the passes disagree (BALD > 0); points 3-5: all passes agree (BALD = 0)
    disagree = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    agree = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    mc = torch.stack([disagree, disagree, disagree, agree, agree, agree], dim=1)  # [K=2, N=6, C=2]
    picks = set()
    for seed in range(10):
        ctx = tiny_context(np.arange(6), 3, seed=seed)
        ctx._cache["mc"] = mc
        chosen = get_strategy("PowerBALD").select(ctx).tolist()
        assert sorted(chosen) == [0, 1, 2]
        picks.add(tuple(chosen))
    assert len(picks) > 1  # a random order, not the top-k
    assert get_strategy("power_bald").params["POWERBALD_BETA"].default == 1.0


# ------------------------------------------------------------------------ EPIG

def test_epig_by_hand_information_about_the_targets_not_the_weights():
    # K = 4 posterior samples, 2 classes: x_a's label follows sample k % 2, x_b's follows k // 2, so
    # both have BALD log 2, but only x_a tells anything about targets that behave like x_a
    def onehots(classes):
        return torch.nn.functional.one_hot(torch.tensor(classes), 2).double()

    x_a, x_b, sure = onehots([0, 1, 0, 1]), onehots([0, 0, 1, 1]), onehots([0, 0, 0, 0])
    pool = torch.stack([x_a, x_b, sure], dim=1)  # [K, 3, C]
    targets = torch.stack([x_a, x_a], dim=1)
    assert torch.allclose(bald_scores(pool), torch.tensor([math.log(2), math.log(2), 0], dtype=torch.float64))
    assert torch.allclose(epig_scores(pool, targets), torch.tensor([math.log(2), 0, 0], dtype=torch.float64),
                          atol=1e-12)


@pytest.mark.parametrize("chunk", [2**24, 50, 7])
def test_epig_matches_baal_on_the_same_samples(chunk):
    pool, targets = _random_mc(8, 60, 5, seed=3), _random_mc(8, 13, 5, seed=4)
    theirs = baal_heuristics.EPIG().compute_score(pool.permute(1, 2, 0).numpy(), targets.permute(1, 2, 0).numpy())
    np.testing.assert_allclose(epig_scores(pool, targets, chunk_elements=chunk).numpy(), theirs, rtol=1e-4, atol=1e-6)


def test_epig_strategy_uses_one_mask_per_pass_and_targets_from_the_pool():
    def onehots(classes):
        return torch.nn.functional.one_hot(torch.tensor(classes), 2).float()

    group, alone = onehots([0, 1, 0, 1]), onehots([0, 0, 1, 1])
    mc = torch.stack([alone, group, group, group, group], dim=1)
    ctx = tiny_context(np.arange(5), 1)
    ctx._cache["mc_consistent"] = mc
    assert get_strategy("EPIG").select(ctx).tolist() == [1]  # the group is 4 of the 5 targets
    assert "mc" not in ctx._cache  # never the independent-mask passes


# ------------------------------------------------------------------------ BAIT

def test_bait_with_one_direction_of_fisher_takes_the_largest_information():
    # C = 2, D = 1: every I(x) = 2 p0 p1 h^2 u u^T with the same u, so the objective is f / (lambda + sum of
    # the magnitudes taken) and BAIT takes the k largest p0 p1 h^2
    p0 = torch.tensor([0.5, 0.9, 0.7, 0.5, 0.99, 0.6], dtype=torch.float64)
    h = torch.tensor([[1.0], [3.0], [1.0], [0.5], [10.0], [2.0]], dtype=torch.float64)
    probs = torch.stack([p0, 1 - p0], 1)
    magnitude = (p0 * (1 - p0) * h[:, 0] ** 2)
    chosen = bait_select(probs, h, probs[:0], h[:0], 3)
    assert sorted(chosen.tolist()) == sorted(torch.argsort(magnitude, descending=True)[:3].tolist())


def test_bait_fisher_is_the_sum_of_the_expected_gradient_outer_products():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(7, 3, generator=generator, dtype=torch.float64), 1)
    emb = torch.randn(7, 4, generator=generator, dtype=torch.float64)
    dense = _reference_exp_grad_embedding(probs, emb)  # [N, C, C*D]
    expected = torch.einsum("nyi,nyj->ij", dense, dense)
    assert torch.allclose(fisher_sum(probs, emb), expected)
    factors = fisher_factors(probs)
    outer = probs[:, :, None] * probs[:, None]
    assert torch.allclose(factors.transpose(1, 2) @ factors, torch.diag_embed(probs) - outer)


def _reference_exp_grad_embedding(probs, emb):
    """JordanAsh/badge query_strategies/strategy.py, get_exp_grad_embedding (the last method of the
    file, read at commit 173a184): for an assumed label y, block c of row y is h (1 - p_c) if c == y
    else -h p_c, the row scaled by sqrt(p_y)."""
    n, classes = probs.shape
    out = torch.zeros(n, classes, classes * emb.shape[1], dtype=torch.float64)
    for i in range(n):
        for y in range(classes):
            for c in range(classes):
                block = emb[i] * ((1 - probs[i, c]) if c == y else -probs[i, c])
                out[i, y, c * emb.shape[1]:(c + 1) * emb.shape[1]] = block
            out[i, y] *= math.sqrt(probs[i, y])
    return out


def _reference_bait(xt_pool, xt_all, xt_labeled, k, lamb=1.0):
    """JordanAsh/badge query_strategies/bait_sampling.py at commit 173a184: BaitSampling.query (after
    select) builds fisher = sum over all points of xt^T xt / N_all and init = the same over the labeled
    set / L; select() (line 46) runs 2k greedy additions with Woodbury updates, then len - k removals."""
    fisher = torch.einsum("nyi,nyj->ij", xt_all, xt_all) / len(xt_all)
    n_labeled = len(xt_labeled)
    init = torch.einsum("nyi,nyj->ij", xt_labeled, xt_labeled) / max(n_labeled, 1)
    rank, dim = xt_pool.shape[1], xt_pool.shape[2]
    current_inv = torch.inverse(lamb * torch.eye(dim, dtype=torch.float64) + init * n_labeled / (n_labeled + k))
    x = xt_pool * math.sqrt(k / (n_labeled + k))
    chosen = []
    for _ in range(int(2 * k)):
        inner = torch.inverse(torch.eye(rank, dtype=torch.float64) + x @ current_inv @ x.transpose(1, 2))
        trace = torch.diagonal(x @ current_inv @ fisher @ current_inv @ x.transpose(1, 2) @ inner, dim1=-2,
                               dim2=-1).sum(-1)
        ind = next(j for j in np.argsort(trace.numpy())[::-1] if j not in chosen)
        chosen.append(int(ind))
        xs = x[ind][None]
        inner = torch.inverse(torch.eye(rank, dtype=torch.float64) + xs @ current_inv @ xs.transpose(1, 2))
        current_inv = (current_inv - current_inv @ xs.transpose(1, 2) @ inner @ xs @ current_inv)[0]
    for _ in range(len(chosen) - k):
        xs = x[chosen]
        inner = torch.inverse(-torch.eye(rank, dtype=torch.float64) + xs @ current_inv @ xs.transpose(1, 2))
        trace = torch.diagonal(xs @ current_inv @ fisher @ current_inv @ xs.transpose(1, 2) @ inner, dim1=-2,
                               dim2=-1).sum(-1)
        drop = int(torch.argmin(-trace))
        xs = x[chosen[drop]][None]
        inner = torch.inverse(-torch.eye(rank, dtype=torch.float64) + xs @ current_inv @ xs.transpose(1, 2))
        current_inv = (current_inv - current_inv @ xs.transpose(1, 2) @ inner @ xs @ current_inv)[0]
        del chosen[drop]
    return chosen


@pytest.mark.parametrize("seed,labeled,k,lamb", [(0, 10, 4, 1.0), (1, 0, 3, 1.0), (2, 25, 5, 0.3)])
def test_bait_matches_the_reference_picks(seed, labeled, k, lamb):
    generator = torch.Generator().manual_seed(seed)
    n, classes, dim = 30, 3, 4
    probs = torch.softmax(1.5 * torch.randn(n + labeled, classes, generator=generator, dtype=torch.float64), 1)
    emb = torch.randn(n + labeled, dim, generator=generator, dtype=torch.float64)
    xt = _reference_exp_grad_embedding(probs, emb)
    expected = _reference_bait(xt[:n], xt, xt[n:], k, lamb)
    ours = bait_select(probs[:n], emb[:n], probs[n:], emb[n:], k, lamb=lamb)
    assert ours.tolist() == expected


# ------------------------------------------------------------------------ GALAXY

def test_galaxy_bisects_the_shortest_path_between_different_labels():
    # two classes: one graph ordered by p_0. Node 0 (top) is labeled class 0, node 9 (bottom) class 1
    p0 = torch.tensor([0.99, 0.95, 0.9, 0.8, 0.6, 0.55, 0.45, 0.3, 0.2, 0.1])
    probs = torch.stack([p0, 1 - p0], 1)
    labeled = torch.zeros(10, dtype=torch.bool)
    labeled[[0, 9]] = True
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    chosen = galaxy_select(probs, labeled, labels, torch.zeros(3, dtype=torch.long))
    # the midpoint of 1..8 is 4, which counts as class 0 (p0 0.6), so the cut is now 4..9: midpoint 6, which
    # counts as class 1 (p0 0.45): the cut is 4..6, midpoint 5
    assert chosen.tolist() == [4, 6, 5]


def test_galaxy_takes_the_unlabeled_node_nearest_a_cut_between_labeled_neighbours():
    p0 = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2])
    probs = torch.stack([p0, 1 - p0], 1)
    labeled = torch.tensor([False, False, True, True, False, False, False])
    labels = torch.tensor([0, 0, 1, 0, 0, 0, 0])  # bits [y = 0]: node 2 has 0, node 3 has 1: a 0-1 edge
    assert galaxy_select(probs, labeled, labels, torch.zeros(1, dtype=torch.long)).tolist() == [1]
    labeled[1] = True  # now the nearest unlabeled to that edge is node 4 on the right
    labels[1] = 1
    assert galaxy_select(probs, labeled, labels, torch.zeros(1, dtype=torch.long)).tolist() == [4]


def _reference_galaxy(preds, labeled_idx, onehot_labels, ks):
    """LabelBench LabelBench/strategy/strategy_impl/galaxy.py (GALAXYSampling.select, from line 26),
    with its class draws given (``ks``) and its random fallback refused. ``onehot_labels`` plays its
    TRAIN_LABEL; a queried node is marked labeled and its row is read from then on."""
    n_class = preds.shape[1]
    labeled = np.zeros(len(preds), dtype=bool)
    labeled[labeled_idx] = True
    most_confident = np.max(preds, axis=1).reshape((-1, 1))
    margins = preds - most_confident + 1e-8 * most_confident if n_class > 2 else preds[:, 0:1]
    graphs = [np.argsort(-margins[:, i], kind="stable") for i in range(n_class if n_class > 2 else 1)]
    query = []
    for k in ks:
        graph = list(graphs[k])
        graph_left = graph[1:] + [graph[-1]]
        graph_right = ([graph[0]] + graph[:-1])[::-1]
        last = shortest = lst = last_left = last_right = nearest = None
        nearest_dist = len(graph) + 1
        node = graph[0]
        for i, nxt in enumerate(graph_left):
            if labeled[node]:
                if last is not None and lst is not None and (shortest is None or shortest[1] - shortest[0] >
                                                             lst[1] - lst[0]) and \
                        onehot_labels[node][k] != onehot_labels[last][k]:
                    shortest = lst
                last, lst = node, None
                if onehot_labels[node][k] == 0 and labeled[nxt] and onehot_labels[nxt][k] == 1 and \
                        last_left is not None and nearest_dist >= i - last_left:
                    nearest_dist, nearest = i - last_left, last_left
            else:
                lst = [i, i] if lst is None else [lst[0], i]
                last_left = i
            node = nxt
        if shortest is None:
            node = graph[-1]
            for i, nxt in enumerate(graph_right):
                i_right = len(graph) - 1 - i
                if labeled[node] and labeled[nxt] and onehot_labels[node][k] == 1 and onehot_labels[nxt][k] == 0 \
                        and last_right is not None and nearest_dist > last_right - i_right:
                    nearest_dist, nearest = last_right - i_right, last_right
                elif not labeled[node]:
                    last_right = i_right
                node = nxt
            assert nearest is not None, "the reference would draw at random here"
            pick = graph[nearest]
        else:
            pick = graph[(shortest[0] + shortest[1]) // 2]
        labeled[pick] = True
        query.append(int(pick))
    return query


@pytest.mark.parametrize("seed,classes", [(0, 4), (1, 3), (2, 2), (3, 6)])
def test_galaxy_matches_the_reference_picks(seed, classes):
    rng = np.random.default_rng(seed)
    m = 300
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(m, classes)) * 2), 1)
    labeled_idx = rng.choice(m, 60, replace=False)
    labeled = torch.zeros(m, dtype=torch.bool)
    labeled[labeled_idx] = True
    truth = torch.from_numpy(rng.integers(classes, size=m))
    ks = rng.integers(classes if classes > 2 else 1, size=25)
    # the reference reads the true label of a node it has just queried; ours its predicted class
    seen = torch.where(labeled, truth, probs.argmax(1))
    expected = _reference_galaxy(probs.numpy(), labeled_idx, np.eye(classes)[seen.numpy()], ks)
    assert galaxy_select(probs, labeled, truth, torch.from_numpy(ks)).tolist() == expected


def test_galaxy_strategy_reads_only_the_labeled_sets_labels():
    ctx = tiny_context(np.arange(10, 50), 6)
    first = get_strategy("GALAXY").select(ctx)
    ctx = tiny_context(np.arange(10, 50), 6)
    targets = ctx.data.train.targets.clone()
    targets[10:50] = (targets[10:50] + 1) % 3  # change the pool's labels: the query must not move
    ctx.data.train.targets = targets
    assert np.array_equal(get_strategy("GALAXY").select(ctx), first)


# ------------------------------------------------------------------------ ALFA-Mix

def test_alfamix_changes_by_hand():
    # W = I, b = 0: the logits are the features. z = (0.55, 0.45) predicts class 0; mixing towards the
    # class-1 anchor (0, 1) moves z by eps ||z* - z|| along the gradient, (-1, 1)/sqrt 2: the prediction
    # flips once 0.45 + 0.55 eps > 0.55 - 0.55 eps, eps > 1/11
    weight, bias = torch.eye(2), torch.zeros(2)
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[0.55, 0.45], [0.95, 0.05]])
    assert alfamix_changes(z, weight, bias, anchors, 0.09).tolist() == [False, False]
    assert alfamix_changes(z, weight, bias, anchors, 0.095).tolist() == [True, False]
    assert alfamix_changes(z, weight, bias, anchors, 0.9).tolist() == [True, True]


def test_alfamix_anchors_are_the_labeled_class_means():
    feats = torch.tensor([[0.0, 2.0], [2.0, 0.0], [4.0, 2.0]])
    anchors = class_anchors(feats, torch.tensor([0, 1, 1]), 3)
    assert torch.allclose(anchors, torch.tensor([[0.0, 2.0], [3.0, 1.0], [2.0, 4 / 3]]))  # class 2: all


def _reference_alfamix_candidates(ulb, lb, lb_y, weight, bias, n, n_label, step=0.03125):
    """AminParvaneh/alpha_mix_active_learning query_strategies/alpha_mix_sampling.py at commit 0833e76:
    query() (line 20) with c_find_optimum_alpha, find_candidate_set() and calculate_optimum_alpha()."""
    def clf(e):
        return e @ weight.T + bias

    pred_1 = clf(ulb).argmax(1)
    var_emb = ulb.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(clf(var_emb), pred_1)
    grads = torch.autograd.grad(loss, var_emb)[0]
    candidate = torch.zeros(len(ulb), dtype=torch.bool)
    cap = 0.0
    while cap < 1.0:
        cap += step
        eps = cap / math.sqrt(ulb.shape[1])
        for i in range(n_label):
            emb = lb[lb_y == i]
            if emb.size(0) == 0:
                emb = lb
            anchor = emb.mean(dim=0).view(1, -1).repeat(len(ulb), 1)
            z = anchor - ulb
            alpha = (eps * z.norm(dim=1) / grads.norm(dim=1)).unsqueeze(1).repeat(1, z.size(1)) * grads / (z + 1e-8)
            mix = (1 - alpha) * ulb + alpha * anchor
            candidate |= clf(mix).argmax(1) != pred_1
        if candidate.sum() > n:
            break
    return candidate


def _reference_alfamix_sample(n, feats):
    """The same file, sample(): k-means, then each cluster's member nearest its centre."""
    from sklearn.cluster import KMeans

    feats = feats.numpy()
    learner = KMeans(n_clusters=n, n_init=10, random_state=0).fit(feats)
    idx = learner.predict(feats)
    dis = ((feats - learner.cluster_centers_[idx]) ** 2).sum(1)
    return np.array([np.arange(len(feats))[idx == i][dis[idx == i].argmin()] for i in range(n) if (idx == i).sum()])


@pytest.mark.parametrize("seed,n", [(0, 5), (1, 12), (2, 40)])
def test_alfamix_candidates_match_the_reference(seed, n):
    generator = torch.Generator().manual_seed(seed)
    classes, dim = 4, 6
    weight, bias = torch.randn(classes, dim, generator=generator), torch.randn(classes, generator=generator)
    ulb, lb = torch.randn(200, dim, generator=generator), torch.randn(30, dim, generator=generator)
    lb_y = torch.randint(classes - 1, (30,), generator=generator)  # the last class has no labels: all labeled
    expected = _reference_alfamix_candidates(ulb, lb, lb_y, weight, bias, n, classes)
    ours = alfamix_candidates(ulb, weight, bias, class_anchors(lb, lb_y, classes), n)
    assert torch.equal(ours, expected) and 0 < int(ours.sum()) < 200


def test_alfamix_selection_matches_the_reference_on_separated_candidates(monkeypatch):
    # candidates in 3 tight groups of directions: any k-means run finds the groups, so the picks agree
    generator = torch.Generator().manual_seed(0)
    directions = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    feats = (directions.repeat_interleave(5, 0) + 0.05 * torch.randn(15, 3, generator=generator)) * 3
    feats = torch.cat([feats, -feats])  # the other 15 (negative directions) are never candidates here
    weight, bias = torch.eye(3), torch.zeros(3)
    candidate = torch.zeros(30, dtype=torch.bool)
    candidate[:15] = True
    members = torch.nonzero(candidate).flatten()
    expected = members[_reference_alfamix_sample(3, torch.nn.functional.normalize(feats[members], dim=1))]
    monkeypatch.setattr("utils.samplers.alfamix.alfamix_candidates", lambda *args: candidate)
    ours = alfamix_select(feats, weight, bias, torch.zeros(0, 3), 3)
    assert sorted(ours.tolist()) == sorted(expected.tolist())


def test_alfamix_fills_a_short_query_with_distinct_random_points():
    weight, bias = torch.eye(2), torch.zeros(2)
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.tensor([[0.55, 0.45]] + [[5.0, -5.0]] * 9)  # only the first can change at any cap
    chosen = alfamix_select(feats, weight, bias, anchors, 4, seed=3)
    assert chosen[0] == 0 and len(set(chosen.tolist())) == 4


def test_alfamix_finds_the_models_linear_head_or_refuses():
    ctx = tiny_context(np.arange(10, 50), 5)
    assert linear_head(ctx.model, ctx.features(), ctx.probs()) is ctx.model.fc
    with pytest.raises(UserError, match="linear layer"):
        linear_head(ctx.model, ctx.features(), torch.softmax(ctx.probs() * 3, 1))
