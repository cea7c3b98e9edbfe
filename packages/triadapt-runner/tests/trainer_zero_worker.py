"""One process of test_trainer_deepspeed.py: a stock transformers.Trainer with TriAdaptCallback under DeepSpeed
ZeRO-N (a world of one, gloo on the CPU), 8 steps. Args: OUT STAGE RESUME_FROM ("" for none) MODEL_FOLDER [bf16];
STAGE -1 trains without DeepSpeed. With bf16, the TrainingArguments come first, as in a ZeRO-3 script, so that
transformers builds the model inside deepspeed.zero.Init, partitioned and in bf16. Writes OUT/result.json: ranks,
step, growth events, the adapter's tensors and dtypes, whether the base was built partitioned, and whether the
callback followed DeepSpeed's fp32 copies."""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, Trainer, TrainingArguments

import triadapt
import triadapt.integrations.transformers as trainer_integration
from triadapt.integrations.transformers import TriAdaptCallback
from triadapt.zero_shares import follow_deepspeed
from triadapt.persistence import adapter_tensors

out, stage = Path(sys.argv[1]), int(sys.argv[2])
resume, model_folder = sys.argv[3] or None, sys.argv[4]
bf16 = sys.argv[5:] == ["bf16"]
followed = []


def follow_and_record(controller, optimizer):
    followed.append(follow_deepspeed(controller, optimizer))
    return followed[-1]


trainer_integration.follow_deepspeed = follow_and_record


class Rows(torch.utils.data.Dataset):
    def __init__(self, tokenizer):
        texts = ["a gripping, beautifully acted film", "dull and far too long", "the best thriller of the year",
                 "a tedious mess with no heart"] * 4
        self.enc = tokenizer(texts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")

    def __len__(self):
        return self.enc["input_ids"].shape[0]

    def __getitem__(self, i):
        ids = self.enc["input_ids"][i]
        return {"input_ids": ids, "attention_mask": self.enc["attention_mask"][i],
                "labels": ids.masked_fill(self.enc["attention_mask"][i] == 0, -100)}


tokenizer = AutoTokenizer.from_pretrained(model_folder)
deepspeed = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "zero_optimization":
             {"stage": stage}, "bf16": {"enabled": bf16}, "gradient_clipping": 1.0}


def arguments():
    return TrainingArguments(output_dir=str(out), max_steps=8, per_device_train_batch_size=4, learning_rate=5e-3,
                             weight_decay=0.1, use_cpu=True, report_to="none", save_strategy="steps", save_steps=4,
                             logging_steps=1, disable_tqdm=True, seed=0, dataloader_num_workers=0, bf16=bf16,
                             deepspeed=deepspeed if stage >= 0 else None)


args = arguments() if bf16 else None
torch.manual_seed(0)
model = LlamaForCausalLM.from_pretrained(model_folder)
partitioned = any(hasattr(p, "ds_id") for p in model.parameters())
ctl = triadapt.inject(model, triadapt.TriAdaptConfig(warmup_steps=2, growth_interval=2, ref_rank=2, seed=0,
                                                     init_std=0.2, orth_reg_weight=0.0))
args = args or arguments()
trainer = Trainer(model=model, args=args, train_dataset=Rows(tokenizer), callbacks=[TriAdaptCallback(ctl)])
trainer.train(resume_from_checkpoint=resume)
units = {k: v.detach().float().tolist() for k, v in adapter_tensors(ctl).items()}
(out / "result.json").write_text(json.dumps({
    "ranks": ctl.ranks, "step": ctl.step_count, "units": units, "events": [e.step for e in ctl.events],
    "unit_dtypes": sorted({str(layer.units.dtype) for layer in ctl.layers.values()}), "partitioned": partitioned,
    "followed": followed}))
