"""Growth follows optimizer steps, not micro-batches: gradient accumulation must not speed up the schedule."""

import pytest
import torch

from triadapt import TriAdaptConfig, TriAdaptError, inject
from triadapt.testing.models import ToyModel, toy_batch


def run(accumulation, optimizer_steps=12):
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, warmup_steps=2, growth_interval=2,
                                            total_steps=optimizer_steps, threshold="fixed", fixed_k=1, seed=0))
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2)
    ctl.attach(optimizer)
    for micro in range(optimizer_steps * accumulation):
        x, y = toy_batch(seed=micro)
        (torch.nn.functional.cross_entropy(ctl.model(x), y) / accumulation).backward()
        if (micro + 1) % accumulation == 0:
            optimizer.step()
            optimizer.zero_grad()
    return ctl


@pytest.mark.parametrize("accumulation", [1, 4])
def test_events_at_optimizer_steps(accumulation):
    ctl = run(accumulation)
    assert ctl.step_count == 12
    assert [e.step for e in ctl.events] == [4, 6, 8, 10, 12]


def test_manual_step_while_attached_is_refused():
    ctl = run(1, optimizer_steps=4)  # still attached
    with pytest.raises(TriAdaptError, match="already attached"):
        ctl.attach(torch.optim.SGD(list(ctl.trainable_parameters()), lr=0.1))
    with pytest.raises(TriAdaptError, match="already calls step"):
        ctl.step()


def test_missing_total_steps_fails_before_first_step():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query"]))
    with pytest.raises(ValueError, match="total_steps=None is invalid: threshold 'linear' needs"):
        ctl.step()


def test_schedule_without_event_is_refused_by_inject():
    with pytest.raises(ValueError, match="total_steps=99 is invalid: allows no growth event.*step 100"):
        inject(ToyModel(), TriAdaptConfig(target_modules=["query"], warmup_steps=90, growth_interval=50,
                                          total_steps=99))


def test_schedule_without_event_is_refused_when_t_is_set_later():
    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=["query"], warmup_steps=90, growth_interval=50))
    with pytest.raises(ValueError, match="total_steps=99 is invalid: allows no growth event.*step 100"):
        ctl.set_total_steps(99)
