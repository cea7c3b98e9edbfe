"""A stock transformers.Trainer grows ranks through TriAdaptCallback, per optimizer step."""

import pytest
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from triadapt import TriAdaptConfig, TriAdaptError, inject
from triadapt.integrations.transformers import TriAdaptCallback
from conftest import load_minilm


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


def controller(path):
    return inject(load_minilm(path), TriAdaptConfig(warmup_steps=2, growth_interval=2, ref_rank=2, seed=0,
                                                    orth_reg_weight=0.1))


def test_stock_trainer_grows_at_optimizer_steps(minilm_path, sentiment_batch, tmp_path):
    ctl = controller(minilm_path)
    callback = TriAdaptCallback(ctl)
    trainer = Trainer(model=ctl.model, args=args(tmp_path), train_dataset=Rows(sentiment_batch),
                      callbacks=[callback])
    trainer.train()
    assert ctl.config.total_steps == 8 and ctl.step_count == 8
    assert [e.step for e in ctl.events] == [4, 6, 8]  # 16 micro-batches, 8 optimizer steps
    assert ctl.allocator.total_rank() > len(ctl.layers)
    assert callback.last_orthogonal_loss > 0


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


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


def test_resume_from_checkpoint_restores_controller(minilm_path, sentiment_batch, tmp_path):
    full = controller(minilm_path)
    Trainer(model=full.model, args=args(tmp_path / "full"), train_dataset=Rows(sentiment_batch),
            callbacks=[TriAdaptCallback(full)]).train()

    first = controller(minilm_path)
    Trainer(model=first.model, args=args(tmp_path, save_strategy="steps", save_steps=4),
            train_dataset=Rows(sentiment_batch), callbacks=[TriAdaptCallback(first), StopAt(4)]).train()
    assert first.step_count == 4 and [e.step for e in first.events] == [4]

    resumed = controller(minilm_path)
    Trainer(model=resumed.model, args=args(tmp_path), train_dataset=Rows(sentiment_batch),
            callbacks=[TriAdaptCallback(resumed)]).train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert resumed.step_count == 8
    assert [e.step for e in resumed.events] == [e.step for e in full.events] == [4, 6, 8]
    assert resumed.ranks == full.ranks


def test_fp16_is_refused_with_advice(minilm_path, sentiment_batch, tmp_path):
    ctl = controller(minilm_path)
    callback = TriAdaptCallback(ctl)

    class Args:
        fp16 = True

    with pytest.raises(TriAdaptError, match="fp16=True is not supported.*use bf16=True"):
        callback.on_train_begin(Args(), None, None)
