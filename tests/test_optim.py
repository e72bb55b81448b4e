"""The fit's Adam (furpe/fitting/optim.py) against torch.optim.Adam."""
from __future__ import annotations

import math

import pytest
import torch

from furpe.fitting.optim import MultiRateAdam


def _run(make_opt, steps: int = 25):
    torch.manual_seed(0)
    a = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(5, requires_grad=True)
    c = torch.randn(2, requires_grad=True)  # unused in the first steps: no gradient there
    target = torch.randn(4, 3)
    step = make_opt([a, b, c])
    for i in range(steps):
        loss = (a - target).pow(2).sum() + (b.sin() * 3).pow(2).sum()
        if i >= 10:
            loss = loss + c.pow(4).sum()
        loss.backward()
        step(i)
        for p in (a, b, c):
            p.grad = None
    return a.detach(), b.detach(), c.detach()


def test_multi_rate_adam_matches_torch_adam_with_a_schedule():
    lrs = [0.05, 0.2, 0.01]
    sched = lambda i: (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * i / 25)))  # noqa: E731

    def ours(params):
        opt = MultiRateAdam(params, lrs)
        return lambda i: opt.step(sched(i))

    def theirs(params):
        opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)])
        lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, sched)
        return lambda i: (opt.step(), lr_sched.step())

    start = _run(lambda params: (lambda i: None))
    got, want = _run(ours), _run(theirs)
    for g, w, s in zip(got, want, start):
        assert (w - s).abs().max() > 0.05  # the parameters moved
        assert torch.allclose(g, w, atol=1e-6)


def test_multi_rate_adam_needs_one_rate_per_tensor():
    with pytest.raises(ValueError, match="one learning rate"):
        MultiRateAdam([torch.zeros(2, requires_grad=True)], [0.1, 0.2])
