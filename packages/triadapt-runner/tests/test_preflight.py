"""The preflight: T as the loop derives it, and cached model structures equal to the real ones."""

from types import SimpleNamespace

import pytest

from triadapt import plan_injection, TriAdaptConfig
from triadapt_runner.tasks.specs import TASKS
from triadapt_runner.tasks.registry import kind_for
from triadapt_runner.models import model_path
from triadapt_runner.preflight import optimizer_steps
from triadapt_runner.structures_cache import describe, meta_model, skeleton


@pytest.mark.parametrize("items,batch,world,accumulation,epochs,expected", [
    (100, 16, 1, 1, 1, 7),  # ⌈100/16⌉ = 7 batches
    (100, 16, 2, 1, 1, 4),  # 7 batches over 2 processes: 4 each (accelerate evens them out)
    (100, 16, 2, 3, 2, 4),  # 4 micro-batches per process, ⌈4/3⌉ = 2 optimizer steps, 2 epochs
    (96, 16, 1, 2, 3, 9),  # 6 batches, 3 steps an epoch
])
def test_optimizer_steps_by_hand(items, batch, world, accumulation, epochs, expected):
    train = SimpleNamespace(batch_size=batch, gradient_accumulation_steps=accumulation, epochs=epochs)
    assert optimizer_steps(items, train, world) == expected


def _plan_view(model):
    plan = plan_injection(model, TriAdaptConfig(target_modules=None))
    return plan.targets, plan.heads, plan.model_type


@pytest.mark.parametrize("task", ["rotten_tomatoes", "drug_reviews", "squad_v2"])
def test_cached_structure_gives_the_plan_of_the_real_model(task, tmp_path, monkeypatch):
    monkeypatch.setenv("TRIADAPT_CACHE", str(tmp_path))
    spec = TASKS[task]
    kind = kind_for(spec)
    real = kind.build_model(model_path("minilm"), spec)  # the pretrained model with its head, on the CPU
    first = meta_model(kind, model_path("minilm"), spec)  # built on the meta device, then cached
    assert list((tmp_path / "structures").glob("*.json"))
    cached = meta_model(kind, model_path("minilm"), spec)  # from the cache
    assert type(cached).__name__ == "Module" and type(first).__name__ != "Module"
    assert _plan_view(cached) == _plan_view(first) == _plan_view(real)


def test_conv1d_models_round_trip_through_the_cache(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    model = GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, num_labels=2))
    rebuilt = skeleton(describe(model))
    assert _plan_view(rebuilt) == _plan_view(model)
    assert rebuilt.get_submodule("transformer.h.1.attn.c_attn").weight.shape == (32, 96)


def test_a_damaged_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIADAPT_CACHE", str(tmp_path))
    spec = TASKS["rotten_tomatoes"]
    kind = kind_for(spec)
    meta_model(kind, model_path("minilm"), spec)
    (entry,) = (tmp_path / "structures").glob("*.json")
    entry.write_text("{not json")
    assert _plan_view(meta_model(kind, model_path("minilm"), spec))[2] == "bert"
    assert entry.read_text().startswith("{\"format\"")
