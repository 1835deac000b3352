"""Known answers for TOD's score, the COD loss, the EMA update and LL4AL's ranking loss."""

import pytest
import torch
from torch import nn

from utils.methods.losses import cod_loss, ema_update, ranking_loss
from utils.samplers import tod_scores, top_k


def test_tod_score_is_half_squared_l2_of_softmax_outputs():
    current = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    previous = torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.6, 0.4]])
    assert torch.allclose(tod_scores(current, previous), torch.tensor([1.0, 0.0, 0.16]))


def test_cod_loss_sums_head_agreement_and_teacher_consistency():
    logits = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    cons = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    # MSE(z, z') = (0 + 4 + 0 + 4) / 4 = 2; MSE(z', z_ema) = (0 + 0 + 0 + 4) / 4 = 1
    assert cod_loss(logits, cons, teacher).item() == pytest.approx(3.0)
    assert cod_loss(logits, logits, logits).item() == 0.0


def test_ema_update_follows_the_mean_teacher_schedule_on_parameters_only():
    student, teacher = nn.BatchNorm1d(1), nn.BatchNorm1d(1)
    nn.init.constant_(student.weight, 1.0)
    nn.init.constant_(teacher.weight, 0.0)
    student.running_mean.fill_(5.0)
    assert ema_update(teacher, student, step=1) == pytest.approx(0.5)  # first update keeps half the init
    assert teacher.weight.item() == pytest.approx(0.5)
    assert ema_update(teacher, student, step=2) == pytest.approx(2 / 3)
    assert teacher.weight.item() == pytest.approx(0.5 * 2 / 3 + 1 / 3)
    assert ema_update(teacher, student, step=10_000) == pytest.approx(0.999)  # capped
    assert teacher.running_mean.item() == 0.0  # buffers are not averaged


def test_ranking_loss_pairs_the_batch_back_to_front():
    pred = torch.tensor([3.0, 1.0, 0.0, 2.0])
    target = torch.tensor([4.0, 0.0, 1.0, 5.0])
    # pairs (0,3): d = -1 -> sign -1, d^ = 1 -> 1 + 1 = 2; (1,2): d = -1, d^ = 1 -> 2
    assert ranking_loss(pred, target).item() == pytest.approx(2.0)
    # right order by more than the margin costs nothing
    assert ranking_loss(torch.tensor([5.0, 2.0, 0.0, 0.0]), torch.tensor([2.0, 1.0, 0.0, 0.0])).item() == 0.0
    # a tie counts as "first is smaller": loss = max(0, 1 + d^)
    assert ranking_loss(torch.tensor([0.5, 0.0]), torch.tensor([1.0, 1.0])).item() == pytest.approx(1.5)
    # an odd batch leaves its last sample out
    assert ranking_loss(torch.tensor([0.5, 0.0, 9.0]), torch.tensor([1.0, 1.0, 3.0])).item() == pytest.approx(1.5)
    assert ranking_loss(torch.tensor([0.5, 0.0, 9.0]), torch.tensor([1.0, 1.0, 3.0]), margin=2.0).item() == \
        pytest.approx(2.5)


def test_ranking_loss_gradient_reaches_predictions_only():
    pred = torch.tensor([0.0, 1.0], requires_grad=True)
    target = torch.tensor([2.0, 0.0], requires_grad=True)
    ranking_loss(pred, target).backward()
    assert pred.grad.tolist() == [-1.0, 1.0]  # d = 2 > 0, d^ = -1: loss 2, d loss / d d^ = -1
    assert target.grad is None


def test_top_k_largest_and_smallest_with_stable_ties():
    scores = torch.tensor([0.1, 0.5, 0.5, 0.0, 0.9])
    assert top_k(scores, 3).tolist() == [4, 1, 2]
    assert top_k(scores, 2, largest=False).tolist() == [3, 0]
