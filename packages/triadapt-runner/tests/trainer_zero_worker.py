"""One process of test_trainer_deepspeed.py: a stock transformers.Trainer with TriAdaptCallback under DeepSpeed
ZeRO-N (a world of one, gloo on the CPU), 8 steps. Args: OUT STAGE RESUME_FROM ("" for none) MODEL_FOLDER; STAGE -1
trains without DeepSpeed. Writes OUT/result.json: ranks, step, growth events and the adapter's tensors."""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaForCausalLM, Trainer, TrainingArguments

import triadapt
from triadapt.integrations.transformers import TriAdaptCallback
from triadapt.persistence import adapter_tensors

out, stage = Path(sys.argv[1]), int(sys.argv[2])
resume, model_folder = sys.argv[3] or None, sys.argv[4]


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
torch.manual_seed(0)
model = LlamaForCausalLM.from_pretrained(model_folder)
ctl = triadapt.inject(model, triadapt.TriAdaptConfig(warmup_steps=2, growth_interval=2, ref_rank=2, seed=0,
                                                     init_std=0.2, orth_reg_weight=0.0))
deepspeed = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "zero_optimization":
             {"stage": stage}, "bf16": {"enabled": False}, "gradient_clipping": 1.0}
args = TrainingArguments(output_dir=str(out), max_steps=8, per_device_train_batch_size=4, learning_rate=5e-3,
                         weight_decay=0.1, use_cpu=True, report_to="none", save_strategy="steps", save_steps=4,
                         logging_steps=1, disable_tqdm=True, seed=0, dataloader_num_workers=0,
                         deepspeed=deepspeed if stage >= 0 else None)
trainer = Trainer(model=model, args=args, train_dataset=Rows(tokenizer), callbacks=[TriAdaptCallback(ctl)])
trainer.train(resume_from_checkpoint=resume)
units = {k: v.detach().float().tolist() for k, v in adapter_tensors(ctl).items()}
(out / "result.json").write_text(json.dumps({"ranks": ctl.ranks, "step": ctl.step_count, "units": units,
                                              "events": [e.step for e in ctl.events]}))
