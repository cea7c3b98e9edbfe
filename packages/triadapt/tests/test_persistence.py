"""Save / load round trips with the rank pattern; strict loading; clear mismatch errors."""

import json

import pytest
import torch

from triadapt import AdapterLoadError, TriAdaptConfig, inject, load
from triadapt.persistence import CONFIG_FILE, WEIGHTS_FILE
from triadapt.testing.conformance import train
from triadapt.testing.models import ToyModel, toy_batch
from safetensors.torch import load_file, save_file


def trained(**kw):
    config = TriAdaptConfig(target_modules=ToyModel.targets, warmup_steps=2, growth_interval=2, total_steps=20,
                            ref_rank=3, max_rank=6, seed=0, **kw)
    ctl = inject(ToyModel(), config)
    train(ctl, 12)  # stop half-way through the schedule: ranks are unequal
    ctl.model.eval()
    return ctl


@pytest.mark.parametrize("structure", ["triangular", "lora"])
def test_round_trip_same_logits_and_ranks(tmp_path, structure):
    ctl = trained(structure=structure, threshold="nonlinear")
    assert len(set(ctl.ranks.values())) > 1
    x = toy_batch(seed=3)[0]
    ctl.save(tmp_path)
    loaded = load(ToyModel(), tmp_path)
    loaded.model.eval()
    assert loaded.ranks == ctl.ranks
    torch.testing.assert_close(loaded.model(x), ctl.model(x), rtol=0, atol=0)


def test_only_active_units_are_stored(tmp_path):
    ctl = trained()
    ctl.save(tmp_path)
    keys = load_file(str(tmp_path / WEIGHTS_FILE)).keys()
    unit_keys = [k for k in keys if ".triadapt_units." in k]
    assert len(unit_keys) == 4 * sum(ctl.ranks.values())  # a, b, l, u per active unit
    assert {"classifier.weight", "classifier.bias"} <= set(keys)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["rank_pattern"] == ctl.ranks


def test_resume_state_restores_allocator(tmp_path):
    ctl = trained()
    ctl.save(tmp_path)
    loaded = load(ToyModel(), tmp_path, resume_state=True)
    assert loaded.step_count == 12 and len(loaded.events) == len(ctl.events)
    assert loaded.allocator.scorer.state_dict() == ctl.allocator.scorer.state_dict()


def test_other_base_model_is_refused(tmp_path):
    trained().save(tmp_path)
    with pytest.raises(AdapterLoadError, match=r"layer 'blocks\.0\.\w+' is \d+->\d+ here, \d+->\d+ in the adapter"):
        load(ToyModel(width=16), tmp_path)
    with pytest.raises(AdapterLoadError, match="layers missing here \\['blocks.2.down'"):
        load(ToyModel(depth=2), _with_depth(tmp_path, 3))


def _with_depth(tmp_path, depth):
    ctl = inject(ToyModel(depth=depth), TriAdaptConfig(target_modules=ToyModel.targets))
    out = tmp_path / "deep"
    ctl.save(out)
    return out


def test_missing_or_extra_tensor_is_refused(tmp_path):
    trained().save(tmp_path)
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    tensors.pop("blocks.0.query.triadapt_units.0.a")
    save_file(tensors, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(AdapterLoadError, match="missing \\['blocks.0.query.triadapt_units.0.a'\\]"):
        load(ToyModel(), tmp_path)


def test_not_an_adapter_directory(tmp_path):
    with pytest.raises(AdapterLoadError, match="triadapt_adapter.json: not found"):
        load(ToyModel(), tmp_path)


def test_merged_adapter_cannot_be_saved(tmp_path):
    ctl = trained()
    ctl.merge()
    with pytest.raises(Exception, match="unmerge\\(\\) first"):
        ctl.save(tmp_path)


def test_damaged_weights_file_is_named(tmp_path):
    trained().save(tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"\x00\x01 not safetensors")
    with pytest.raises(AdapterLoadError, match="adapter_model.safetensors: not a readable safetensors file"):
        load(ToyModel(), tmp_path)


def test_tensors_given_to_save_must_be_the_adapters(tmp_path):
    """save_adapter(tensors=...) (a gathered state dict's values) refuses other keys and writes nothing."""
    from triadapt import TriAdaptError
    from triadapt.persistence import adapter_tensors, save_adapter

    ctl = inject(ToyModel(), TriAdaptConfig(target_modules=ToyModel.targets, total_steps=10, seed=0))
    tensors = {key: value.clone() for key, value in adapter_tensors(ctl).items()}
    dropped = next(iter(tensors))
    with pytest.raises(TriAdaptError, match=rf"missing \['{dropped}'\], unexpected \[\]"):
        save_adapter(ctl, tmp_path / "bad", {k: v for k, v in tensors.items() if k != dropped})
    assert not (tmp_path / "bad").exists()
    save_adapter(ctl, tmp_path / "good", {k: v + 1 for k, v in tensors.items()})  # the given values are written
    assert torch.equal(load_file(str(tmp_path / "good" / WEIGHTS_FILE))[dropped], tensors[dropped] + 1)
