"""A stock transformers.Trainer grows ranks through TriAdaptCallback, per optimizer step; its checkpoints hold the
adapter, not the base model, and resume exactly from any folder."""

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback, TrainingArguments

import triadapt
from triadapt import AdapterLoadError, TriAdaptConfig, TriAdaptError, inject
from triadapt.integrations.trainer_checkpoints import (AdapterSave, is_adapter_checkpoint, load_in_place,
                                                       write_adapter)
from triadapt.integrations.transformers import TriAdaptCallback, _prepare_zero3
from triadapt.persistence import CONFIG_FILE, STATE_FILE, WEIGHTS_FILE, adapter_tensors
from conftest import SENTENCES, load_minilm

TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE, STATE_FILE)


class Rows(torch.utils.data.Dataset):
    def __init__(self, batch):
        self.batch = batch

    def __len__(self):
        return len(self.batch["labels"])

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.batch.items()}


def args(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                max_steps=8, learning_rate=5e-3, use_cpu=True, report_to="none", save_strategy="no",
                logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    base.update(kw)
    return TrainingArguments(**base)


def controller(path, **kw):
    config = dict(warmup_steps=2, growth_interval=2, ref_rank=2, seed=0, orth_reg_weight=0.1)
    config.update(kw)
    return inject(load_minilm(path), TriAdaptConfig(**config))


# -- tiny random decoders (shared with test_trl.py) --------------------------------------------------------------
def tiny_llama(tokenizer, seed=0):
    """A tiny random LlamaForCausalLM on the MiniLM tokenizer's vocabulary (about 4M parameters, mostly embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=64,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                         eos_token_id=tokenizer.sep_token_id)
    return LlamaForCausalLM(config)


def llama_controller(tokenizer, **kw):
    config = dict(warmup_steps=2, growth_interval=2, ref_rank=2, seed=0, init_std=0.2)
    config.update(kw)
    return inject(tiny_llama(tokenizer), TriAdaptConfig(**config))


def lm_rows(tokenizer):
    """Causal-LM rows of the sentences: input_ids, attention_mask and labels (padding ignored), 16 rows."""
    enc = tokenizer([s for s, _ in SENTENCES] * 2, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return Rows({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels})


@pytest.fixture(scope="session")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


class GradProbe(TrainerCallback):
    """Records, before each optimizer step, which adapted layers got a nonzero gradient on their active units."""

    def __init__(self, ctl):
        self.ctl, self.steps = ctl, []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.steps.append({name: layer.units.grad is not None and bool(layer.units.grad[:layer.rank].abs().sum() > 0)
                           for name, layer in self.ctl.layers.items()})


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


def folder_bytes(folder):
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def model_bytes(model):
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def base_keys(model):
    """State-dict keys of the base model: everything but the rank units (named as in the plain model)."""
    return {k.replace(".base_layer.", ".") for k in model.state_dict() if "triadapt_" not in k}


def assert_adapter_only(folder, model, heads=()):
    """``folder`` holds TriAdapt's adapter files and none of the base model's weights."""
    for name in ADAPTER_FILES:
        assert (Path(folder) / name).is_file(), name
    assert not any((Path(folder) / name).exists() for name in ("model.safetensors", "pytorch_model.bin"))
    saved = set(load_file(str(Path(folder) / WEIGHTS_FILE)))
    head_keys = {k for k in saved if k.split(".")[0] in heads}
    assert saved and not (saved - head_keys) & base_keys(model)
    assert all(".triadapt_units." in k for k in saved - head_keys)


# -- growth and the regulariser -----------------------------------------------------------------------------------
def test_stock_trainer_grows_at_optimizer_steps(minilm_path, sentiment_batch, tmp_path, monkeypatch):
    """... and corrects young units at the learning rate of their step: the refresh redoes a step's update, so it
    must run before the LR schedule moves on."""
    ctl, seen, refreshed = controller(minilm_path), RatesSeen(), []
    original = ctl.refresher.__call__
    monkeypatch.setattr(type(ctl.refresher), "__call__", lambda self, optimizer, steps_done: (
        refreshed.append(triadapt.fresh_units.unwrap_optimizer(optimizer).param_groups[0]["lr"]),
        original(optimizer, steps_done)))
    callback = TriAdaptCallback(ctl)
    trainer = Trainer(model=ctl.model, args=args(tmp_path, lr_scheduler_type="linear"),
                      train_dataset=Rows(sentiment_batch), callbacks=[callback, seen])
    trainer.train()
    assert len(set(seen.rates)) == 8 and refreshed == seen.rates  # a different rate at every step
    assert ctl.config.total_steps == 8 and ctl.step_count == 8
    assert [e.step for e in ctl.events] == [4, 6, 8]  # 16 micro-batches, 8 optimizer steps
    assert ctl.allocator.total_rank() > len(ctl.layers)
    assert callback.last_orthogonal_loss > 0
    assert callback.trainer is trainer  # found without being passed


class RatesSeen(TrainerCallback):
    """The learning rate each optimizer step used (read just before the step)."""

    def __init__(self):
        self.rates = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.rates.append(optimizer.param_groups[0]["lr"])


def test_regulariser_gradient_equals_loss_term(minilm_path, sentiment_batch, tmp_path):
    """The callback's one backward of λR per step gives the gradient of (loss + λR)."""
    ctl = controller(minilm_path)
    callback = TriAdaptCallback(ctl)
    model = ctl.model.train()
    model.zero_grad()
    callback.on_step_begin(None, None, None)
    torch.manual_seed(0)  # identical dropout masks in both passes
    model(**sentiment_batch).loss.backward()
    via_callback = [p.grad.clone() for p in ctl.trainable_parameters() if p.grad is not None]
    model.zero_grad()
    torch.manual_seed(0)
    (model(**sentiment_batch).loss + ctl.orthogonal_loss()).backward()
    direct = [p.grad for p in ctl.trainable_parameters() if p.grad is not None]
    for a, b in zip(via_callback, direct):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# -- checkpoints, save_model, resume ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_run(minilm_path, sentiment_batch, tmp_path_factory):
    """8 steps with a checkpoint every 4: the controller, the trainer and the output folder."""
    out = tmp_path_factory.mktemp("full")
    ctl = controller(minilm_path)
    trainer = Trainer(model=ctl.model, args=args(out, save_strategy="steps", save_steps=4),
                      train_dataset=Rows(sentiment_batch), callbacks=[TriAdaptCallback(ctl)])
    trainer.train()
    return SimpleNamespace(ctl=ctl, trainer=trainer, out=out)


def test_checkpoint_holds_adapter_and_trainer_state_not_base_weights(full_run):
    checkpoint = full_run.out / "checkpoint-4"
    assert_adapter_only(checkpoint, full_run.ctl.model, heads=("classifier",))
    for name in TRAINER_FILES:
        assert (checkpoint / name).is_file(), name
    assert folder_bytes(checkpoint) < 0.1 * model_bytes(full_run.ctl.model)  # whole model: 138 % before
    assert is_adapter_checkpoint(checkpoint)


def test_save_only_model_checkpoint_holds_adapter_only(minilm_path, sentiment_batch, tmp_path):
    ctl = controller(minilm_path)
    Trainer(model=ctl.model, args=args(tmp_path, max_steps=4, save_strategy="steps", save_steps=4,
                                       save_only_model=True),
            train_dataset=Rows(sentiment_batch), callbacks=[TriAdaptCallback(ctl)]).train()
    checkpoint = tmp_path / "checkpoint-4"
    assert_adapter_only(checkpoint, ctl.model, heads=("classifier",))
    assert not any((checkpoint / name).exists() for name in TRAINER_FILES[:3])
    assert folder_bytes(checkpoint) < 0.1 * model_bytes(ctl.model)


def test_save_model_writes_a_loadable_adapter(full_run, minilm_path, sentiment_batch, tmp_path):
    full_run.trainer.save_model(str(tmp_path / "adapter"))
    assert_adapter_only(tmp_path / "adapter", full_run.ctl.model, heads=("classifier",))
    assert set(load_file(str(tmp_path / "adapter" / WEIGHTS_FILE))) == set(adapter_tensors(full_run.ctl))
    fresh = load_minilm(minilm_path, seed=1)
    loaded = triadapt.load(fresh, tmp_path / "adapter")
    assert loaded.ranks == full_run.ctl.ranks
    full_run.ctl.model.eval(), fresh.eval()
    with torch.no_grad():
        expected = full_run.ctl.model(**{k: v for k, v in sentiment_batch.items() if k != "labels"}).logits
        got = fresh(**{k: v for k, v in sentiment_batch.items() if k != "labels"}).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_resume_from_a_checkpoint_in_another_folder_equals_the_uninterrupted_run(full_run, minilm_path,
                                                                               sentiment_batch, tmp_path):
    moved = tmp_path / "elsewhere" / "step4"
    shutil.copytree(full_run.out / "checkpoint-4", moved)
    resumed = controller(minilm_path)
    Trainer(model=resumed.model, args=args(tmp_path / "new-output"), train_dataset=Rows(sentiment_batch),
            callbacks=[TriAdaptCallback(resumed)]).train(resume_from_checkpoint=str(moved))
    assert resumed.step_count == 8
    assert [e.step for e in resumed.events] == [e.step for e in full_run.ctl.events] == [4, 6, 8]
    assert resumed.ranks == full_run.ctl.ranks
    expected = adapter_tensors(full_run.ctl)
    got = adapter_tensors(resumed)
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6, msg=key)


def test_resume_from_a_full_weights_checkpoint_still_works(minilm_path, sentiment_batch, tmp_path):
    """A checkpoint with the whole model (as written before adapter-only checkpoints) still resumes."""
    first = controller(minilm_path)
    trainer = Trainer(model=first.model, args=args(tmp_path / "a", save_strategy="steps", save_steps=4),
                      train_dataset=Rows(sentiment_batch), callbacks=[TriAdaptCallback(first), StopAt(4)])
    trainer.train()
    checkpoint = tmp_path / "a" / "checkpoint-4"
    # the hook wrote the adapter; add the whole model beside it, as the Trainer wrote checkpoints before
    type(first.model).save_pretrained(first.model, checkpoint)
    assert not is_adapter_checkpoint(checkpoint)
    resumed = controller(minilm_path)
    Trainer(model=resumed.model, args=args(tmp_path / "b"), train_dataset=Rows(sentiment_batch),
            callbacks=[TriAdaptCallback(resumed)]).train(resume_from_checkpoint=str(checkpoint))
    assert resumed.step_count == 8 and [e.step for e in resumed.events] == [4, 6, 8]


def test_unload_puts_back_save_pretrained(minilm_path, sentiment_batch, tmp_path):
    ctl = controller(minilm_path)
    Trainer(model=ctl.model, args=args(tmp_path, max_steps=1), train_dataset=Rows(sentiment_batch),
            callbacks=[TriAdaptCallback(ctl)])
    assert isinstance(vars(ctl.model).get("save_pretrained"), AdapterSave)
    model = ctl.unload()
    assert "save_pretrained" not in vars(model)
    model.save_pretrained(tmp_path / "merged")
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert not (tmp_path / "merged" / CONFIG_FILE).exists()


def test_in_place_load_refuses_a_different_adapter_before_changing_anything(full_run, minilm_path, tmp_path):
    other = controller(minilm_path, structure="lora")
    other.save(tmp_path / "lora")
    target = controller(minilm_path)
    before = {k: v.clone() for k, v in target.model.state_dict().items()}
    with pytest.raises(AdapterLoadError, match="structure='lora'"):
        load_in_place(target, tmp_path / "lora")
    narrow = controller(minilm_path, target_modules=["query", "value"])
    narrow.save(tmp_path / "narrow")
    with pytest.raises(AdapterLoadError, match="do not match"):
        load_in_place(target, tmp_path / "narrow")
    after = target.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and target.step_count == 0
    assert all(layer.rank == 1 for layer in target.layers.values())


def test_adapter_from_a_gathered_state_dict_equals_save(full_run, tmp_path):
    """The DeepSpeed/FSDP path (tensors from the state dict the Trainer gathered) writes what ctl.save writes."""
    ctl = full_run.ctl
    ctl.save(tmp_path / "live")
    write_adapter(ctl, tmp_path / "gathered", {k: v.clone() for k, v in ctl.model.state_dict().items()})
    assert (tmp_path / "live" / CONFIG_FILE).read_text() == (tmp_path / "gathered" / CONFIG_FILE).read_text()
    live, gathered = (load_file(str(tmp_path / d / WEIGHTS_FILE)) for d in ("live", "gathered"))
    assert set(live) == set(gathered) and all(torch.equal(live[k], gathered[k]) for k in live)


def test_load_best_model_at_end_restores_the_best_checkpoints_ranks(minilm_path, sentiment_batch, tmp_path):
    ctl = controller(minilm_path)

    class FirstIsBest(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            metrics["eval_loss"] = float(state.global_step)  # lower is better: checkpoint-4 wins

    trainer = Trainer(model=ctl.model, args=args(tmp_path, save_strategy="steps", save_steps=4, eval_strategy="steps",
                                                 eval_steps=4, load_best_model_at_end=True,
                                                 metric_for_best_model="loss", greater_is_better=False),
                      train_dataset=Rows(sentiment_batch), eval_dataset=Rows(sentiment_batch),
                      callbacks=[TriAdaptCallback(ctl), FirstIsBest()])
    trainer.train()
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-4")
    best = triadapt.load(load_minilm(minilm_path, seed=1), tmp_path / "checkpoint-4")
    assert ctl.ranks == best.ranks and ctl.step_count == 4
    got, expected = adapter_tensors(ctl), adapter_tensors(best)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


# -- gradient checkpointing ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_gradient_checkpointing_with_frozen_base_trains_adapters(tokenizer, tmp_path, reentrant):
    ctl = llama_controller(tokenizer, orth_reg_weight=0.0)  # no regulariser: its gradient would hide a missing one
    probe = GradProbe(ctl)
    Trainer(model=ctl.model, args=args(tmp_path, max_steps=4, gradient_accumulation_steps=1, per_device_train_batch_size=4,
                                       activation_checkpointing=True,
                                       activation_checkpointing_kwargs={"use_reentrant": reentrant}),
            train_dataset=lm_rows(tokenizer), callbacks=[TriAdaptCallback(ctl), probe]).train()
    assert ctl.model.model.layers[0].gradient_checkpointing
    assert len(probe.steps) == 4 and all(all(step.values()) for step in probe.steps)
    assert ctl.events  # and grew


def test_gradient_checkpointing_of_a_vision_model_needs_the_input_grads(tmp_path):
    """transformers makes the input embeddings require grad for text models only; reentrant checkpointing of a ViT
    with a frozen base would give its adapters no gradient without the callback's doing it."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    model = ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=4, intermediate_size=64, num_labels=2))
    ctl = inject(model, TriAdaptConfig(target_modules=["q_proj", "v_proj"], warmup_steps=2, growth_interval=2,
                                       ref_rank=2, seed=0, orth_reg_weight=0.0))
    assert model.main_input_name == "pixel_values"
    images = Rows({"pixel_values": torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
                   "labels": torch.tensor([0, 1] * 4)})
    probe = GradProbe(ctl)
    callback = TriAdaptCallback(ctl)
    Trainer(model=model, args=args(tmp_path, max_steps=4, gradient_accumulation_steps=1, activation_checkpointing=True,
                                   activation_checkpointing_kwargs={"use_reentrant": True}),
            train_dataset=images, callbacks=[callback, probe]).train()
    assert model.vit.layers[0].gradient_checkpointing
    assert len(probe.steps) == 4 and all(all(step.values()) for step in probe.steps)
    assert not callback._input_grads and not getattr(model, "_require_grads_hooks", None)  # removed at the end


# -- DeepSpeed (a 2-process ZeRO-3 run is the runner's test; here the preparation on its own) ------------------------
def zero_args(stage, kwargs=None, threshold="auto"):
    config = {"zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": threshold}}
    return SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=stage, deepspeed_config=config),
                           activation_checkpointing=True, activation_checkpointing_kwargs=kwargs,
                           gradient_checkpointing_kwargs=kwargs)


def test_zero3_preparation_as_trl_does_for_peft_and_units_kept_whole(tokenizer):
    ctl = llama_controller(tokenizer)
    ctl.model.to(torch.bfloat16)
    for layer in ctl.layers.values():
        layer.units.data = layer.units.data.float()  # as injected after a 16-bit zero.Init build
        for param in layer.base_layer.parameters():
            param.ds_id = 0  # what deepspeed.zero.Init marks a partitioned parameter with
    largest = max(layer.units.numel() for layer in ctl.layers.values())
    zero3 = zero_args(3)
    _prepare_zero3(ctl, zero3)
    assert zero3.activation_checkpointing_kwargs == {"use_reentrant": True}
    assert zero3.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage3_param_persistence_threshold"] == largest
    assert all(layer.units.dtype == torch.bfloat16 and layer.units.requires_grad for layer in ctl.layers.values())
    chosen = zero_args(3, {"use_reentrant": False}, threshold=10 * largest)
    _prepare_zero3(ctl, chosen)
    assert chosen.activation_checkpointing_kwargs == {"use_reentrant": False}  # the user's choices stay
    assert chosen.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage3_param_persistence_threshold"] == 10 * largest
    zero2 = zero_args(2)
    _prepare_zero3(ctl, zero2)
    assert zero2.activation_checkpointing_kwargs is None
    assert zero2.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage3_param_persistence_threshold"] == "auto"


def test_deepspeed_needs_the_regulariser_off(minilm_path, sentiment_batch, tmp_path):
    """The callback's own backward of λR would be a second gradient per step, which DeepSpeed stops on."""
    callback = TriAdaptCallback(controller(minilm_path))
    with pytest.raises(TriAdaptError, match="needs orth_reg_weight=0"):
        callback.on_init_end(zero_args(2), None, None)
    TriAdaptCallback(controller(minilm_path, orth_reg_weight=0.0)).on_init_end(zero_args(2), None, None)


def test_callback_refuses_a_trainer_of_another_model(minilm_path, sentiment_batch, tmp_path):
    ctl = controller(minilm_path)
    with pytest.raises(TriAdaptError, match="not the controller's model"):
        Trainer(model=load_minilm(minilm_path), args=args(tmp_path), train_dataset=Rows(sentiment_batch),
                callbacks=[TriAdaptCallback(ctl)])


def test_fp16_is_refused_with_advice(minilm_path, sentiment_batch, tmp_path):
    ctl = controller(minilm_path)
    callback = TriAdaptCallback(ctl)

    class Args:
        fp16 = True

    with pytest.raises(TriAdaptError, match="fp16=True is not supported.*use bf16=True"):
        callback.on_train_begin(Args(), None, None)


def test_callback_derives_the_papers_regime_from_max_steps(minilm_path):
    """Without t0 / ΔT in the config, T = max_steps gives t0 = ΔT = round(T/50); explicit values win."""
    from types import SimpleNamespace

    derived = TriAdaptCallback(inject(load_minilm(minilm_path), TriAdaptConfig(ref_rank=2, seed=0)))
    fixed = TriAdaptCallback(inject(load_minilm(minilm_path), TriAdaptConfig(ref_rank=2, seed=0, warmup_steps=7)))
    for callback in (derived, fixed):
        callback.on_train_begin(SimpleNamespace(fp16=False, activation_checkpointing=False,
                                                gradient_checkpointing=False, deepspeed_plugin=None),
                                SimpleNamespace(global_step=0, max_steps=500), None)
    assert (derived.controller.config.warmup_steps, derived.controller.config.growth_interval) == (10, 10)
    assert (fixed.controller.config.warmup_steps, fixed.controller.config.growth_interval) == (7, 10)
    assert derived.controller.validate_schedule().events[0].step == 20

