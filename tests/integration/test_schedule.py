"""Learning-rate schedules: warm-up, plateau, cosine over epochs and cosine over the time budget."""

import math

import pytest
import torch

from ase_so3.training.config import TrainConfig
from ase_so3.training.state import LRSchedule


def _schedule(kind="cosine_budget", budget_s=100.0, warmup_steps=0, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    args = dict(base_lr=0.01, warmup_steps=warmup_steps, min_lr=1e-5, total_epochs=10,
                patience=2, factor=0.5, budget_s=budget_s)
    args.update(kw)
    return LRSchedule(opt, kind, **args), opt


def _cosine(frac, base=0.01, floor=1e-5):
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(1.0, frac)))


def _epoch(schedule, steps, elapsed):
    for _ in range(steps):
        schedule.step()
    schedule.end_epoch(1.0, elapsed)


def test_cosine_budget_follows_the_training_clock():
    s, opt = _schedule()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    _epoch(s, 10, 25.0)  # 2.5 s per step
    assert s.lr() == pytest.approx(_cosine(0.25))
    s.step()
    s.step()  # two steps into the next epoch: 25 + 2 * 2.5 s
    assert s.lr() == pytest.approx(_cosine(0.30))
    assert opt.param_groups[0]["lr"] == pytest.approx(_cosine(0.30))
    for _ in range(8):
        s.step()
    s.end_epoch(1.0, 50.0)
    assert s.lr() == pytest.approx(_cosine(0.5))
    _epoch(s, 10, 120.0)  # past the budget: the floor
    assert s.lr() == pytest.approx(1e-5)


def test_cosine_budget_ignores_the_metric_and_resumes_exactly():
    a, _ = _schedule()
    b, _ = _schedule()
    _epoch(a, 7, 30.0)
    _epoch(b, 7, 30.0)
    a.end_epoch(0.1)  # a metric without a clock reading changes nothing
    b.end_epoch(99.0)
    assert a.lr() == b.lr()
    c, _ = _schedule()
    c.load_state_dict(a.state_dict())
    for s in (a, c):
        s.step()
        s.step()
    assert c.lr() == a.lr() != _cosine(0.0)


def test_an_older_schedule_state_without_a_clock_still_loads():
    s, _ = _schedule(kind="plateau")
    state = s.state_dict()
    del state["clock"], state["clock_steps"]
    t, _ = _schedule(kind="plateau")
    t.load_state_dict(state)
    assert t.lr() == s.lr()


def test_warm_up_scales_the_budget_cosine():
    s, _ = _schedule(warmup_steps=4)
    assert s.lr() == pytest.approx(0.01 / 4)
    s.step()
    assert s.lr() == pytest.approx(0.01 / 2)


def test_plateau_and_epoch_cosine_unchanged():
    s, _ = _schedule(kind="plateau")
    for metric in (1.0, 2.0, 2.0, 2.0):
        s.end_epoch(metric, 10.0)
    assert s.lr() == pytest.approx(0.005)
    s, _ = _schedule(kind="cosine")
    for _ in range(5):
        s.end_epoch(1.0, 1000.0)  # the epoch cosine does not read the clock
    assert s.lr() == pytest.approx(_cosine(0.5))


def test_budget_cosine_needs_a_budget_and_refuses_snapshots():
    with pytest.raises(ValueError, match="time_budget_minutes"):
        _schedule(budget_s=None)
    with pytest.raises(ValueError, match="scheduler must be one of"):
        _schedule(kind="linear")
    with pytest.raises(ValueError, match="time_budget_minutes"):
        TrainConfig(data="x.h5", scheduler="cosine_budget")
    with pytest.raises(ValueError, match="its own run"):
        TrainConfig(data="x.h5", scheduler="cosine_budget", time_budget_minutes=60,
                    snapshot_minutes=[15])
    TrainConfig(data="x.h5", scheduler="cosine_budget", time_budget_minutes=60)


def test_a_held_learning_rate_overrides_the_schedule_and_resumes():
    s, opt = _schedule(kind="cosine")
    _epoch(s, 5, 10.0)
    s.hold(3e-4)
    assert opt.param_groups[0]["lr"] == 3e-4
    _epoch(s, 5, 20.0)
    assert s.lr() == 3e-4
    c, _ = _schedule(kind="cosine")
    c.load_state_dict(s.state_dict())
    assert c.lr() == 3e-4
    old = {k: v for k, v in s.state_dict().items() if k != "fixed_lr"}  # a state written before fixed_lr existed
    d, _ = _schedule(kind="cosine")
    d.load_state_dict(old)
    assert d.lr() == pytest.approx(_cosine(0.2))
