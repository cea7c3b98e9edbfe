"""Real MiniLM: train with growth to unequal ranks; save/load, merge and peft export agree.

Tolerances: save → load is bit-exact (same float32 ops); merge and the peft path reorder
float32 sums (W0x + ΔWx vs (W0 + ΔW)x), so logits agree to 1e-4 absolute.
"""

import torch

from triadapt import TriAdaptConfig, inject, load
from conftest import load_minilm

TOLERANCE = dict(rtol=0, atol=1e-4)


def trained_minilm(path, batch):
    model = load_minilm(path)
    ctl = inject(model, TriAdaptConfig(warmup_steps=1, growth_interval=1, total_steps=12, ref_rank=3, max_rank=6,
                                       rank_increment=2, threshold="nonlinear", seed=0))
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=5e-3)
    ctl.attach(optimizer)
    model.train()
    for _ in range(5):  # stop before the budget is spent: ranks end unequal
        loss = model(**batch).loss + ctl.orthogonal_loss()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return ctl


def test_save_load_merge_and_peft_export_agree(minilm_path, sentiment_batch, tmp_path):
    from peft import PeftModel

    ctl = trained_minilm(minilm_path, sentiment_batch)
    assert len(ctl.layers) == 36 and len(set(ctl.ranks.values())) > 1
    inputs = {k: v for k, v in sentiment_batch.items() if k != "labels"}
    with torch.no_grad():
        reference = ctl.model(**inputs).logits

        ctl.save(tmp_path / "adapter")
        loaded = load(load_minilm(minilm_path, seed=1), tmp_path / "adapter")
        loaded.model.eval()
        assert loaded.ranks == ctl.ranks
        torch.testing.assert_close(loaded.model(**inputs).logits, reference, rtol=0, atol=1e-6)

        ctl.export_peft(tmp_path / "peft", base_model_name_or_path=str(minilm_path))
        peft_model = PeftModel.from_pretrained(load_minilm(minilm_path, seed=2), tmp_path / "peft")
        peft_model.eval()
        lora_ranks = {n.removeprefix("base_model.model."): m.r["default"] for n, m in peft_model.named_modules()
                      if hasattr(m, "lora_A") and "default" in getattr(m, "r", {})}
        assert lora_ranks == ctl.ranks
        torch.testing.assert_close(peft_model(**inputs).logits, reference, **TOLERANCE)

        ctl.merge()
        torch.testing.assert_close(ctl.model(**inputs).logits, reference, **TOLERANCE)
        plain = ctl.unload()
        torch.testing.assert_close(plain(**inputs).logits, reference, **TOLERANCE)


def test_padded_peft_export_has_one_rank_and_the_same_logits(minilm_path, sentiment_batch, tmp_path):
    """For servers that take one rank per adapter: every module at the largest rank, zero-padded."""
    import json

    from peft import PeftModel
    from safetensors.torch import load_file

    ctl = trained_minilm(minilm_path, sentiment_batch)
    inputs = {k: v for k, v in sentiment_batch.items() if k != "labels"}
    top = max(ctl.ranks.values())
    assert min(ctl.ranks.values()) < top
    with torch.no_grad():
        reference = ctl.model(**inputs).logits
        ctl.export_peft(tmp_path / "padded", pad_to_max_rank=True)
    config = json.loads((tmp_path / "padded" / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == top and not config["rank_pattern"] and not config["alpha_pattern"]
    tensors = load_file(str(tmp_path / "padded" / "adapter_model.safetensors"))
    name, rank = min(ctl.ranks.items(), key=lambda item: item[1])
    down = tensors[f"base_model.model.{name}.lora_A.weight"]
    assert down.shape[0] == top and not down[rank:].any()  # the padding rows are zero
    peft_model = PeftModel.from_pretrained(load_minilm(minilm_path, seed=2), tmp_path / "padded").eval()
    assert {m.r["default"] for m in peft_model.modules() if hasattr(m, "lora_A") and "default" in m.r} == {top}
    with torch.no_grad():
        torch.testing.assert_close(peft_model(**inputs).logits, reference, **TOLERANCE)
