"""TRL's SFTTrainer with TriAdaptCallback and no subclass, on a tiny random Llama: ranks grow, checkpoints hold the
adapter and not the base, save_model gives a loadable adapter, a resume from a moved checkpoint equals the
uninterrupted run, and gradient checkpointing with the frozen base trains the adapters."""

import shutil
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("trl", reason="trl is a dependency of the integration env")

from datasets import Dataset  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

import triadapt  # noqa: E402
from triadapt import TriAdaptError  # noqa: E402
from triadapt.integrations.transformers import TriAdaptCallback  # noqa: E402
from triadapt.persistence import adapter_tensors  # noqa: E402
from conftest import SENTENCES  # noqa: E402
from test_trainer import (TRAINER_FILES, GradProbe, assert_adapter_only, folder_bytes, llama_controller,  # noqa: E402
                          model_bytes, tiny_llama)


def sft_args(out, **kw):
    base = dict(output_dir=str(out), max_steps=8, per_device_train_batch_size=4, learning_rate=5e-3, use_cpu=True,
                report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, bf16=False, seed=0,
                dataloader_num_workers=0, dataset_kwargs={"skip_prepare_dataset": True})
    base.update(kw)
    return SFTConfig(**base)


def rows(tokenizer):
    """16 pre-tokenised rows (no chat template, no packing: the collator pads and builds the labels)."""
    return Dataset.from_dict({"input_ids": [tokenizer(s)["input_ids"] for s, _ in SENTENCES * 2]})


def sft(ctl, tokenizer, out, *callbacks, **kw):
    return SFTTrainer(model=ctl.model, args=sft_args(out, **kw), train_dataset=rows(tokenizer),
                      processing_class=tokenizer, callbacks=[TriAdaptCallback(ctl), *callbacks])


@pytest.fixture(scope="module")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="module")
def full_run(tokenizer, tmp_path_factory):
    """8 SFT steps (TRL's default gradient checkpointing on), a checkpoint every 4."""
    out = tmp_path_factory.mktemp("sft")
    ctl = llama_controller(tokenizer)
    trainer = sft(ctl, tokenizer, out, save_strategy="steps", save_steps=4)
    trainer.train()
    return SimpleNamespace(ctl=ctl, trainer=trainer, out=out)


def test_sft_trainer_grows_ranks(full_run):
    ctl, trainer = full_run.ctl, full_run.trainer
    assert trainer.args.gradient_checkpointing  # TRL's default
    assert ctl.step_count == 8 and [e.step for e in ctl.events] == [4, 6, 8]
    assert ctl.allocator.total_rank() > len(ctl.layers)
    callback = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, TriAdaptCallback))
    assert callback.trainer is trainer and callback.last_orthogonal_loss > 0


def test_sft_checkpoint_holds_adapter_and_trainer_state_not_base_weights(full_run):
    checkpoint = full_run.out / "checkpoint-4"
    assert_adapter_only(checkpoint, full_run.ctl.model)
    for name in TRAINER_FILES:
        assert (checkpoint / name).is_file(), name
    assert folder_bytes(checkpoint) < 0.1 * model_bytes(full_run.ctl.model)


def test_sft_save_model_loads_into_a_fresh_model_with_equal_logits(full_run, tokenizer, tmp_path):
    full_run.trainer.save_model(str(tmp_path / "adapter"))
    assert_adapter_only(tmp_path / "adapter", full_run.ctl.model)
    fresh = tiny_llama(tokenizer)
    loaded = triadapt.load(fresh, tmp_path / "adapter")
    assert loaded.ranks == full_run.ctl.ranks
    ids = tokenizer([s for s, _ in SENTENCES[:3]], padding=True, return_tensors="pt")
    full_run.ctl.model.eval(), fresh.eval()
    with torch.no_grad():
        expected = full_run.ctl.model(**ids).logits
        got = fresh(**ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    untrained = tiny_llama(tokenizer)
    with torch.no_grad():
        assert not torch.allclose(untrained(**ids).logits, expected, atol=1e-4)  # the adapter is what matters


def test_sft_resume_from_a_moved_checkpoint_equals_the_uninterrupted_run(full_run, tokenizer, tmp_path):
    moved = tmp_path / "copied" / "ckpt"
    shutil.copytree(full_run.out / "checkpoint-4", moved)
    resumed = llama_controller(tokenizer)
    sft(resumed, tokenizer, tmp_path / "other-output").train(resume_from_checkpoint=str(moved))
    assert resumed.step_count == 8
    assert [e.to_dict() for e in resumed.events] == [e.to_dict() for e in full_run.ctl.events]
    assert resumed.ranks == full_run.ctl.ranks
    expected, got = adapter_tensors(full_run.ctl), adapter_tensors(resumed)
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_sft_gradient_checkpointing_with_frozen_base_trains_adapters(tokenizer, tmp_path, reentrant):
    ctl = llama_controller(tokenizer, orth_reg_weight=0.0)  # no regulariser: its gradient would hide a missing one
    probe = GradProbe(ctl)
    sft(ctl, tokenizer, tmp_path, probe, max_steps=4, gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": reentrant}).train()
    assert ctl.model.model.layers[0].gradient_checkpointing
    assert len(probe.steps) == 4 and all(all(step.values()) for step in probe.steps)
    assert ctl.events


def test_sft_refuses_an_adapter_on_the_lm_head(tokenizer, tmp_path):
    ctl = llama_controller(tokenizer, target_modules=["q_proj", "lm_head"])
    with pytest.raises(TriAdaptError, match="LM head"):
        sft(ctl, tokenizer, tmp_path)
    assert "save_pretrained" not in vars(ctl.model)  # the refused trainer installed nothing on the model


def test_sft_on_a_4bit_base_keeps_float32_units_and_reloads_exactly(tokenizer, tmp_path):
    """The Trainer refuses a quantised model without PEFT adapters and TRL casts a quantised model's trainable
    parameters to bf16: with the callback, TriAdapt's units train in float32 and the adapter reloads exactly."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is a test dependency of the integration env")
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    tiny_llama(tokenizer).save_pretrained(tmp_path / "base")
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)

    def quantised():
        return LlamaForCausalLM.from_pretrained(tmp_path / "base", quantization_config=bnb, device_map="cpu")

    model = quantised()
    ctl = triadapt.inject(model, triadapt.TriAdaptConfig(warmup_steps=2, growth_interval=2, ref_rank=2, seed=0,
                                                         init_std=0.2))
    trainer = sft(ctl, tokenizer, tmp_path / "out", max_steps=4)
    assert all(layer.units.dtype == torch.float32 for layer in ctl.layers.values())
    before = {k: v.clone() for k, v in adapter_tensors(ctl).items()}
    trainer.train()
    assert ctl.events and any(not torch.equal(before[k], v) for k, v in adapter_tensors(ctl).items() if k in before)
    trainer.save_model(str(tmp_path / "adapter"))
    fresh = quantised()
    triadapt.load(fresh, tmp_path / "adapter")
    ids = tokenizer([s for s, _ in SENTENCES[:2]], padding=True, return_tensors="pt")
    model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(**ids).logits, model(**ids).logits, rtol=0, atol=1e-6)
    ctl.unload(merge=False)
    assert not getattr(model, "_hf_peft_config_loaded", False) and "save_pretrained" not in vars(model)
