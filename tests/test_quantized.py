"""bitsandbytes 4-bit (NF4, FP4, double quantisation) and 8-bit bases on the CPU: a tiny random Llama
is injected, trained with growth, saved and loaded exactly, merged within the stated bound, and exported
to peft onto the same quantised base."""

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is a test dependency of the integration env")

from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

from triadapt import TriAdaptConfig, inject, load  # noqa: E402
from triadapt.quantized import QuantizationError, dequantize, kind  # noqa: E402

QUANTISATIONS = {
    "nf4": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32),
    "fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_compute_dtype=torch.float32),
    "nf4-double": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.float32),
    "int8": dict(load_in_8bit=True),
}
IDS = torch.randint(3, 250, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def quantised(folder, name):
    from transformers.utils import logging

    logging.set_verbosity_error()
    return LlamaForCausalLM.from_pretrained(folder, quantization_config=BitsAndBytesConfig(**QUANTISATIONS[name]),
                                            device_map="cpu")


def trained(folder, name, steps=12):
    """A 4/8-bit tiny Llama whose adapters trained 12 steps and grew."""
    model = quantised(folder, name)
    ctl = inject(model, TriAdaptConfig(total_steps=steps, ref_rank=2, seed=0, init_std=0.2))
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=2e-2)
    ctl.attach(optimizer)
    model.train()
    for _ in range(steps):
        (model(input_ids=IDS, labels=IDS).loss + ctl.orthogonal_loss()).backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), ctl


@pytest.mark.parametrize("name", list(QUANTISATIONS))
def test_quantised_base_trains_grows_and_reloads_exactly(llama_folder, name, tmp_path):
    model, ctl = trained(llama_folder, name)
    expected_kind = "8bit" if name == "int8" else "4bit"
    assert len(ctl.layers) == 14 and all(kind(layer.base_layer) == expected_kind for layer in ctl.layers.values())
    assert len(ctl.events) == 6 and ctl.allocator.total_rank() > len(ctl.layers)  # t0 = ΔT = 1: T/50 rounds up to 1
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    ctl.save(tmp_path / "adapter")
    reloaded = load(quantised(llama_folder, name), tmp_path / "adapter")
    assert reloaded.ranks == ctl.ranks
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model.eval()(input_ids=IDS).logits, expected, rtol=0, atol=0)


def test_packed_weights_count_as_the_matrices_they_hold(llama_folder):
    plain = sum(p.numel() for p in LlamaForCausalLM.from_pretrained(llama_folder).parameters())
    ctl = inject(quantised(llama_folder, "nf4"), TriAdaptConfig(total_steps=10, init_rank=1, max_rank=1,
                                                                threshold="none"))
    counts = ctl.parameter_counts()
    assert counts["total"] == plain + counts["reserved_adapter"]


def bound(base, exact):
    """The stated elementwise bound of |Q(W + ΔW) − (W + ΔW)| for the quantisation of ``base``."""
    weight = base.weight
    if kind(base) == "8bit":
        rows = exact.abs().amax(dim=1, keepdim=True)
        return rows / 254 + exact.abs() * 2.0 ** -11 + 1e-6  # half a step of the row scale, float16 rounding
    state = weight.quant_state
    code = bnb.functional.get_4bit_type(state.quant_type, device="cpu").float().sort().values
    half_gap = float((code[1:] - code[:-1]).max()) / 2
    absmax = exact.reshape(-1, state.blocksize).abs().amax(dim=1)  # what the quantiser normalises by
    stored = state.absmax.float()  # what dequantisation multiplies by: with double quantisation, 8-bit itself
    if state.nested:
        stored = bnb.functional.dequantize_blockwise(state.absmax, state.state2).float() + state.offset
    per_block = half_gap * absmax + (stored - absmax).abs()  # rounding to the code, the scale's own error
    return (per_block + 1e-6).reshape(-1, 1).expand(-1, state.blocksize).reshape(exact.shape)


@pytest.mark.parametrize("name", list(QUANTISATIONS))
def test_merge_requantises_within_the_stated_bound(llama_folder, name):
    model, ctl = trained(llama_folder, name)
    exact = {n: dequantize(layer.base_layer) + layer.delta_weight().detach() for n, layer in ctl.layers.items()}
    with torch.no_grad():
        adapted = model(input_ids=IDS).logits
    merged_model = ctl.unload(merge=True)
    assert not any(type(m).__name__ == "AdapterLayer" for m in merged_model.modules())
    for n, matrix in exact.items():
        layer = merged_model.get_submodule(n)
        assert type(layer.weight).__name__ in ("Params4bit", "Int8Params")  # still quantised
        error = (dequantize(layer) - matrix).abs()
        assert bool((error <= bound(layer, matrix)).all()), n
    with torch.no_grad():
        logits = merged_model(input_ids=IDS).logits
    assert (logits - adapted).abs().max() < 0.1 * adapted.abs().max()  # the merge keeps what the adapter learned


def test_unsupported_quantisation_is_refused_and_the_model_kept(llama_folder):
    model, ctl = trained(llama_folder, "nf4", steps=4)
    names = list(ctl.layers)
    victim = ctl.layers[names[-1]].base_layer
    victim.weight = torch.nn.Parameter(torch.zeros(victim.out_features, victim.in_features, dtype=torch.int8),
                                       requires_grad=False)  # an integer weight of no known origin
    before = {n: ctl.layers[n].base_layer.weight for n in names[:-1]}
    with pytest.raises(QuantizationError, match=r"cannot merge into Linear4bit with a Parameter weight of dtype "
                                                r"torch.int8"):
        ctl.unload(merge=True)
    assert all(ctl.layers[n].base_layer.weight is before[n] and not ctl.layers[n].merged for n in names[:-1])


@pytest.mark.parametrize("name", ["nf4", "int8"])
def test_failed_merge_midway_puts_back_the_merged_layers(llama_folder, name, monkeypatch):
    """A requantisation that fails at the fifth layer leaves the first four exactly as they were."""
    from triadapt import quantized

    model, ctl = trained(llama_folder, name, steps=4)
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    original, calls = quantized.requantize, []

    def failing(base, matrix):
        calls.append(base)
        if len(calls) == 5:
            raise RuntimeError("out of memory")
        original(base, matrix)

    monkeypatch.setattr(quantized, "requantize", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        ctl.merge()
    assert not any(layer.merged for layer in ctl.layers.values())
    if name == "nf4":
        assert all(layer.base_layer.quant_state is layer.base_layer.weight.quant_state for layer in ctl.layers.values())
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=IDS).logits, expected, rtol=0, atol=0)


def test_adapter_follows_the_bf16_compute_dtype(llama_folder):
    model = LlamaForCausalLM.from_pretrained(llama_folder, quantization_config=BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16), device_map="cpu")
    ctl = inject(model, TriAdaptConfig(total_steps=10, seed=0, init_std=0.2))
    layer = ctl.layers["model.layers.0.self_attn.q_proj"]
    layer.set_rank(4)
    with torch.no_grad():
        layer.units.normal_(std=0.2, generator=torch.Generator().manual_seed(0))  # B starts at zero: give ΔW a value
    seen = {}
    original = layer.factors

    def spy():
        factors = original()
        seen["factors"] = factors
        return factors

    layer.factors = spy
    x = torch.randn(2, 5, 64)
    out = layer(x)
    delta = out - layer.base_layer(x)
    factors = seen["factors"].cast(torch.bfloat16)
    oracle = (factors.apply(x.to(torch.bfloat16)) * layer.scale).float()
    assert layer.units.dtype == torch.float32 and out.dtype == torch.float32
    torch.testing.assert_close(delta, oracle, rtol=0, atol=1e-6)  # the bf16 result, cast to the input's float32
    fp32 = seen["factors"].apply(x) * layer.scale
    assert (delta - fp32).abs().max() > 1e-4  # not the float32 result


@pytest.mark.parametrize("name", ["nf4", "int8"])
def test_peft_export_loads_onto_the_same_quantised_base(llama_folder, name, tmp_path):
    peft = pytest.importorskip("peft")
    model, ctl = trained(llama_folder, name)
    with torch.no_grad():
        expected = model(input_ids=IDS).logits
    ctl.export_peft(tmp_path / "peft")
    loaded = peft.PeftModel.from_pretrained(quantised(llama_folder, name), tmp_path / "peft").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=IDS).logits, expected, rtol=1e-4, atol=1e-4)


def test_a_quantised_head_is_refused_by_name_and_a_float_head_trains(minilm_path, sentiment_batch, tmp_path):
    """transformers quantises a saved classifier head by default; the head must be left out to be trained."""
    from transformers import AutoModelForSequenceClassification

    from conftest import load_minilm
    from triadapt import TargetError

    load_minilm(minilm_path).save_pretrained(tmp_path)  # a checkpoint that holds its classifier

    def minilm(**extra):
        settings = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32, **extra)
        return AutoModelForSequenceClassification.from_pretrained(tmp_path, device_map="cpu",
                                                                  quantization_config=settings)

    model = minilm()
    with pytest.raises(TargetError, match=r"trainable_modules: 'classifier' is quantised \(bitsandbytes 4-bit fp4\)"
                                          r".*llm_int8_skip_modules=\['classifier'"):
        inject(model, TriAdaptConfig(total_steps=10))
    assert all(p.requires_grad is False or p.dtype.is_floating_point for p in model.parameters())
    ctl = inject(minilm(llm_int8_skip_modules=["classifier"]), TriAdaptConfig(total_steps=4, seed=0))
    optimizer = torch.optim.AdamW(list(ctl.trainable_parameters()), lr=1e-2)
    before = ctl.model.classifier.weight.detach().clone()
    ctl.model(**sentiment_batch).loss.backward()
    optimizer.step()
    assert not torch.equal(ctl.model.classifier.weight, before)  # the float head trained on the 4-bit encoder


@pytest.mark.parametrize("quant_type,nested", [("nf4", False), ("fp4", False), ("nf4", True)])
def test_dequantize_reads_the_cpu_inference_layout_and_leaves_the_layer_as_it_was(quant_type, nested):
    """On CPUs with AVX512-BF16 an evaluated 4-bit layer repacks itself (blocks of 32 rows, transposed bfloat16
    scales); the packing is done by hand here, so the path is tested on every CPU."""
    import bitsandbytes.functional as bnbf

    layer = bnb.nn.Linear4bit(128, 64, bias=False, compute_dtype=torch.float32, quant_type=quant_type)
    weight = torch.randn(64, 128, generator=torch.Generator().manual_seed(0)) * 0.02
    layer.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type=quant_type, compress_statistics=nested,
                                     module=layer).to("cpu")
    standard = dequantize(layer)
    layer.weight.data, layer.weight.quant_state = bnbf._convert_weight_packed_for_cpu(layer.weight.data,
                                                                                     layer.weight.quant_state)
    packed_data, packed_scales = layer.weight.data.clone(), layer.weight.quant_state.absmax.clone()
    read = dequantize(layer)
    # the same values, up to the scales' bfloat16 rounding (and, double-quantised, their 8-bit re-quantisation)
    torch.testing.assert_close(read, standard, rtol=2 ** -7 if not nested else 2 ** -5, atol=1e-6)
    assert layer.weight.quant_state.packing_format_for_cpu  # the layer still computes in its own layout
    assert torch.equal(layer.weight.data, packed_data) and torch.equal(layer.weight.quant_state.absmax, packed_scales)
