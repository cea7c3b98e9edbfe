"""Default target sets on a tiny random model of every family that has one: injection trains and grows."""

import pytest
import torch
from transformers import (DebertaV2Config, DebertaV2ForSequenceClassification, GPT2Config,
                          GPT2ForSequenceClassification)

from triadapt import TriAdaptConfig, inject


def deberta():
    config = DebertaV2Config(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=128, relative_attention=True, pos_att_type=["p2c", "c2p"],
                             max_relative_positions=-1, position_buckets=32, num_labels=2)
    return DebertaV2ForSequenceClassification(config), 6


def deberta_v1():
    import transformers

    config = transformers.DebertaConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=128, relative_attention=True, pos_att_type=["p2c", "c2p"],
                                        max_relative_positions=32, num_labels=2)
    return transformers.DebertaForSequenceClassification(config), 4  # in_proj (q, k, v fused), 3 dense


def bert_like(config_name, model_name):
    def build():
        import transformers

        config = getattr(transformers, config_name)(vocab_size=200, hidden_size=64, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=128, num_labels=2,
                                                    max_position_embeddings=64, pad_token_id=0)
        return getattr(transformers, model_name)(config), 6
    return build


def gpt2():
    config = GPT2Config(vocab_size=200, n_embd=64, n_layer=2, n_head=4, n_positions=64, num_labels=2,
                        pad_token_id=0)
    return GPT2ForSequenceClassification(config), 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj


@pytest.mark.parametrize("factory", [deberta, deberta_v1, bert_like("BertConfig", "BertForSequenceClassification"),
                                     bert_like("RobertaConfig", "RobertaForSequenceClassification"),
                                     bert_like("XLMRobertaConfig", "XLMRobertaForSequenceClassification"), gpt2],
                         ids=["deberta-v2", "deberta", "bert", "roberta", "xlm-roberta", "gpt2"])
def test_default_targets_train_and_grow(factory):
    torch.manual_seed(0)
    model, per_layer = factory()
    ctl = inject(model, TriAdaptConfig(warmup_steps=2, growth_interval=2, total_steps=20, ref_rank=2, seed=0))
    assert len(ctl.layers) == 2 * per_layer
    assert ctl.heads[-1:] in (["classifier"], ["score"])  # DeBERTa v1 also trains its pooler
    ids = torch.randint(1, 200, (8, 12), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1] * 4)
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=2e-2)
    ctl.attach(optimizer)
    losses = []
    for _ in range(20):
        loss = model(input_ids=ids, labels=labels).loss
        (loss + ctl.orthogonal_loss()).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert ctl.events and ctl.allocator.total_rank() == ctl.allocator.initial_budget


def test_gpt2_conv1d_peft_export_matches(tmp_path):
    from peft import PeftModel

    torch.manual_seed(0)
    model, _ = gpt2()
    fresh = GPT2ForSequenceClassification(model.config)
    fresh.load_state_dict(model.state_dict())
    ctl = inject(model, TriAdaptConfig(init_rank=2, threshold="none", seed=0))
    with torch.no_grad():
        for layer in ctl.layers.values():
            for i in range(layer.capacity):
                layer.unit(i)["b"].normal_(std=0.05)
    model.eval()
    ids = torch.randint(1, 200, (2, 10))
    with torch.no_grad():
        reference = model(input_ids=ids).logits
        ctl.export_peft(tmp_path)
        peft_model = PeftModel.from_pretrained(fresh, tmp_path).eval()
        torch.testing.assert_close(peft_model(input_ids=ids).logits, reference, rtol=0, atol=1e-5)


def _decoder(config_name, model_name, **extra):
    import transformers

    def build():
        kwargs = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, vocab_size=128, **extra)
        config = getattr(transformers, config_name)(**kwargs)
        for key, value in (("num_experts", 4), ("num_local_experts", 4), ("moe_intermediate_size", 16),
                           ("shared_expert_intermediate_size", 16), ("num_experts_per_tok", 2)):
            if hasattr(config, key):
                setattr(config, key, value)
        return getattr(transformers, model_name)(config)
    return build


# (family, builder, adapted matrices per layer)
DECODERS = [
    ("llama", _decoder("LlamaConfig", "LlamaForCausalLM"), 7),
    ("qwen2", _decoder("Qwen2Config", "Qwen2ForCausalLM"), 7),
    ("qwen3", _decoder("Qwen3Config", "Qwen3ForCausalLM"), 7),
    ("mistral", _decoder("MistralConfig", "MistralForCausalLM"), 7),
    ("gemma", _decoder("GemmaConfig", "GemmaForCausalLM"), 7),
    ("gemma2", _decoder("Gemma2Config", "Gemma2ForCausalLM"), 7),
    ("gemma3", _decoder("Gemma3TextConfig", "Gemma3ForCausalLM"), 7),
    ("phi3", _decoder("Phi3Config", "Phi3ForCausalLM", pad_token_id=0, eos_token_id=1, bos_token_id=1), 4),
    ("gpt-neox", lambda: __import__("transformers").GPTNeoXForCausalLM(__import__("transformers").GPTNeoXConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=128)), 4),
    ("qwen2-moe", _decoder("Qwen2MoeConfig", "Qwen2MoeForCausalLM"), 7),  # attention + shared expert
    ("qwen3-moe", _decoder("Qwen3MoeConfig", "Qwen3MoeForCausalLM"), 4),  # experts are fused 3-D tensors
    ("mixtral", _decoder("MixtralConfig", "MixtralForCausalLM"), 4),
    ("olmoe", _decoder("OlmoeConfig", "OlmoeForCausalLM"), 4),  # attention only: its experts are fused
]


@pytest.mark.parametrize("build,per_layer", [d[1:] for d in DECODERS], ids=[d[0] for d in DECODERS])
def test_decoder_families_have_default_targets_that_train_and_grow(build, per_layer):
    torch.manual_seed(0)
    model = build()
    ctl = inject(model, TriAdaptConfig(warmup_steps=1, growth_interval=2, total_steps=12, ref_rank=2, seed=0,
                                       lora_alpha=8))
    assert len(ctl.layers) == 2 * per_layer and ctl.heads == []
    ids = torch.randint(2, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=5e-2)
    ctl.attach(optimizer)
    losses = []
    for _ in range(12):
        loss = model(input_ids=ids, labels=ids).loss
        (loss + ctl.orthogonal_loss()).backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] and ctl.events
