"""`transformers.Trainer` integration: a stock Trainer grows ranks with no user glue.

    ctl = triadapt.inject(model, config)
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[TriAdaptCallback(ctl)])

* ``on_train_begin`` sets T = ``state.max_steps`` and validates the schedule.
* ``on_step_begin`` (gradients are zero then, before the first micro-batch of the step)
  back-propagates λ·R of the orthogonal regulariser once. Gradients add up, so this equals
  adding λ·R to the loss of the optimizer step, gradient clipping included.
* ``on_step_end`` (after ``optimizer.step()``) calls ``controller.step(optimizer)``: growth
  follows optimizer steps, whatever ``gradient_accumulation_steps`` is, and grown units stay
  as fresh as new parameters in the Trainer's optimizer (`triadapt.fresh_units`).
* ``on_save`` writes the controller state next to the checkpoint; resuming a checkpoint
  restores it.

Requires transformers; the core package does not import this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from triadapt.controller import Controller
from triadapt.errors import TriAdaptError
from triadapt.persistence import load_state, save_state

STATE_FILE = "triadapt_state.pt"


class TriAdaptCallback(TrainerCallback):
    """Drives a `Controller` from a `transformers.Trainer`."""

    def __init__(self, controller: Controller):
        self.controller = controller
        self.last_orthogonal_loss = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.fp16:
            raise TriAdaptError("TrainingArguments.fp16=True is not supported by TriAdaptCallback (the regulariser "
                                "gradient would miss the loss scale): use bf16=True or fp32")
        if state.global_step > 0:
            self._restore(args, state)
        self.controller.set_total_steps(state.max_steps)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = self.controller.model
        if self.controller.config.orth_reg_weight == 0 or not model.training:
            return
        loss = self.controller.orthogonal_loss()
        loss.backward()
        self.last_orthogonal_loss = float(loss.detach())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.controller.step(kwargs.get("optimizer"))
        if self.controller.step_count != state.global_step:
            raise TriAdaptError(f"controller step {self.controller.step_count} differs from the Trainer's "
                                f"global_step {state.global_step}: was the controller also attached to the optimizer?")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        save_state(self.controller.state_dict(), folder / STATE_FILE)

    def _restore(self, args: Any, state: Any) -> None:
        file = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE
        if not file.is_file():
            raise TriAdaptError(f"{file}: not found; cannot resume the TriAdapt controller at step "
                                f"{state.global_step} (was the checkpoint saved with TriAdaptCallback?)")
        self.controller.load_state_dict(load_state(file))
