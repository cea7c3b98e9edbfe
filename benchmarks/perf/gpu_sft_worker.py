"""One (method, ZeRO stage) cell of benchmarks/perf/gpu_sft.py, in a process of its own.

The runner's own DeepSpeed path: its accelerate plugin and config (`setup_for(...).make_accelerator`), the model
built as the runner builds it (partitioned under ZeRO-3), the method attached through the runner's
`Method` interface, its optimizer, the persistent rank units under ZeRO-3; then timed SFT steps on
one fixed batch. Args: OUT_JSON SPEC_JSON (the deepspeed launcher's --local_rank is ignored). With
``"profile": PATH`` in the spec, the timed steps run under cProfile and PATH gets its top functions.
"""

import cProfile
import json
import pstats
import resource
import statistics
import sys
import time
from pathlib import Path

args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
out, spec = Path(args[0]), json.loads(args[1])

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from triadapt_runner.config import RunConfig  # noqa: E402
from triadapt_runner.tasks.data.builtin import fetch, read_rotten_tomatoes  # noqa: E402
from triadapt_runner.tasks.data.loading import as_instructions  # noqa: E402
from triadapt_runner.tasks.specs import TASKS  # noqa: E402
from triadapt_runner.distributed.processes import init_processes  # noqa: E402
from triadapt_runner.distributed.setup import setup_for  # noqa: E402
from triadapt_runner.tasks.registry import kind_for  # noqa: E402
from triadapt_runner.tasks.causal_lm import Collator, _sft_features, prepare_tokenizer  # noqa: E402
from triadapt_runner.methods.registry import method_for  # noqa: E402
from triadapt_runner.models import model_path  # noqa: E402
from triadapt_runner.training import _param_groups  # noqa: E402

RANK = 8
ADAPTER = {"triadapt": {"init_rank": RANK, "ref_rank": RANK, "threshold": "none"},  # rank 8 throughout
           "peft-lora": {"ref_rank": RANK}}

init_processes()
cfg = RunConfig.from_dict({
    "model": spec["model"], "task": "rotten_tomatoes_sft", "approach": spec["approach"],
    "data": {"max_length": spec["max_length"]},
    "train": {"zero_stage": spec["stage"], "mixed_precision": spec["precision"], "batch_size": spec["batch_size"],
              "learning_rate": 1e-4, "weight_decay": 0.0},
    "adapter": {**ADAPTER[spec["approach"]], "lora_alpha": 16}})
setup = setup_for(cfg.train)
accelerator = setup.make_accelerator()
cuda = accelerator.device.type == "cuda"
task = TASKS["rotten_tomatoes_sft"]
path = model_path(cfg.model)
tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
reviews = read_rotten_tomatoes(fetch("rotten_tomatoes"))[: spec["batch_size"]]
batch = Collator(tokenizer.pad_token_id)(_sft_features(as_instructions(reviews), tokenizer, spec["max_length"], False))
tokens = int(batch["attention_mask"].sum())


def random_model(folder: str):
    """The model's architecture with seeded random weights (built partitioned under ZeRO-3, like from_pretrained)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))


with setup.building_model(accelerator):
    model = random_model(path) if spec.get("random_weights") else kind_for(task).build_model(path, task)
total = spec["warmup"] + spec["steps"]
adapted = method_for(cfg).attach(model, cfg, total)
trainable = adapted.trained_parameters()  # before ZeRO-3 partitions them (numel 0 afterwards)
optimizer = setup.optimizer(_param_groups(adapted.model, cfg.train.weight_decay))
prepared = setup.prepare(accelerator, adapted, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
model, optimizer = prepared.model, prepared.optimizer
batch = {k: v.to(accelerator.device) for k, v in batch.items()}
model.train()
if cuda:
    torch.cuda.reset_peak_memory_stats()
times, losses = [], []
profiler = cProfile.Profile() if spec.get("profile") else None  # host time of the timed steps, by function
for step in range(total):
    if profiler and step == spec["warmup"]:
        profiler.enable()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    loss = model(**batch).loss + adapted.extra_loss()
    accelerator.backward(loss)
    adapted.before_optimizer_step()
    optimizer.step()
    adapted.after_optimizer_step(step + 1, optimizer)
    optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    if step >= spec["warmup"]:
        times.append(time.perf_counter() - start)
    losses.append(float(loss.detach()))
if profiler:
    profiler.disable()
    with open(spec["profile"], "w") as report:
        for order in ("tottime", "cumulative"):
            pstats.Stats(profiler, stream=report).sort_stats(order).print_stats(30)
median = statistics.median(times)
peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KiB on Linux
result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "tokens_per_batch": tokens,
          "median_step_s": median, "tokens_per_s": tokens / median, "peak_memory_mib": peak,
          "peak_memory_kind": "torch.cuda.max_memory_allocated" if cuda else "peak RSS",
          "first_loss": losses[0], "last_loss": losses[-1],
          "trainable_parameters": trainable}
out.write_text(json.dumps(result))
