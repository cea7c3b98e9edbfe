"""The task table: what each task's data looks like and how it is scored, as plain data.

A task names its kind (``single``, ``pair``, ``regression``, ``qa``, ``sft``, ``lm``); what
depends on the kind (metric direction, file columns, options, display) is asked of the kind
object (`triadapt_runner.tasks.registry`), never decided here. The 8 GLUE tasks of the paper
are declared with their hub names, the official TSV layout of the GLUE download, and their
metrics; the built-in offline datasets are declared too. ``custom`` reads any CSV/JSON/Parquet
file, its metrics following its kind (`TaskKind.custom_task`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GlueLayout:
    """One task folder of the official GLUE download (``glue_data/<folder>/{train,dev}.tsv``)."""

    folder: str
    text: str | int  # column name (files with a header) or index (CoLA has none)
    label: str | int
    pair: str | int | None = None
    header: bool = True
    dev_file: str = "dev.tsv"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # the key of its TaskKind: single | pair | regression | qa | sft | lm
    num_labels: int  # 1 for regression, 0 where there are no classes
    metrics: tuple[str, ...]
    main_metric: str
    hub: tuple[str, str] | None = None  # (dataset path, config name) on the Hugging Face hub
    label_names: tuple[str, ...] = ()  # for string labels in files: index = label id
    glue: GlueLayout | None = None
    builtin: str | None = None
    description: str = ""
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "validation": "validation"})

    # -- 0.1.0's kind questions, kept for one minor version: ask the kind object instead ----------
    @property
    def is_regression(self) -> bool:
        _deprecated("is_regression", "kind_for(task).key == 'regression'")
        return self.kind == "regression"

    @property
    def is_qa(self) -> bool:
        _deprecated("is_qa", "kind_for(task).key == 'qa'")
        return self.kind == "qa"

    @property
    def is_causal_lm(self) -> bool:
        _deprecated("is_causal_lm", "kind_for(task).key in ('sft', 'lm')")
        return self.kind in ("sft", "lm")

    @property
    def lower_is_better(self) -> bool:
        _deprecated("lower_is_better", "kind_for(task).lower_is_better(task.main_metric)")
        return self.main_metric in ("loss", "perplexity")

    def better(self, a: float, b: float) -> bool:
        _deprecated("better", "kind_for(task).better(task.main_metric, a, b)")
        return a < b if self.main_metric in ("loss", "perplexity") else a > b


def _deprecated(name: str, replacement: str) -> None:
    import warnings

    warnings.warn(f"TaskSpec.{name} is deprecated and will be removed in 0.3: use "
                  f"triadapt_runner.tasks.registry.{replacement}", DeprecationWarning, stacklevel=3)


NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {t.name: t for t in [
    TaskSpec("cola", "single", 2, ("matthews",), "matthews", ("nyu-mll/glue", "cola"),
             glue=GlueLayout("CoLA", text=3, label=1, header=False), description="CoLA acceptability"),
    TaskSpec("sst2", "single", 2, ("accuracy",), "accuracy", ("nyu-mll/glue", "sst2"),
             glue=GlueLayout("SST-2", text="sentence", label="label"), description="SST-2 sentiment"),
    TaskSpec("mrpc", "pair", 2, ("accuracy", "f1"), "accuracy", ("nyu-mll/glue", "mrpc"),
             glue=GlueLayout("MRPC", text="#1 String", pair="#2 String", label="Quality"),
             description="MRPC paraphrase"),
    TaskSpec("qqp", "pair", 2, ("accuracy", "f1"), "accuracy", ("nyu-mll/glue", "qqp"),
             glue=GlueLayout("QQP", text="question1", pair="question2", label="is_duplicate"),
             description="QQP duplicate questions"),
    TaskSpec("stsb", "regression", 1, ("pearson", "spearman"), "pearson", ("nyu-mll/glue", "stsb"),
             glue=GlueLayout("STS-B", text="sentence1", pair="sentence2", label="score"),
             description="STS-B similarity (0-5)"),
    TaskSpec("mnli", "pair", 3, ("accuracy",), "accuracy", ("nyu-mll/glue", "mnli"), label_names=NLI3,
             glue=GlueLayout("MNLI", text="sentence1", pair="sentence2", label="gold_label",
                             dev_file="dev_matched.tsv"),
             description="MNLI entailment (matched dev)",
             splits={"train": "train", "validation": "validation_matched"}),
    TaskSpec("qnli", "pair", 2, ("accuracy",), "accuracy", ("nyu-mll/glue", "qnli"), label_names=NLI2,
             glue=GlueLayout("QNLI", text="question", pair="sentence", label="label"),
             description="QNLI question entailment"),
    TaskSpec("rte", "pair", 2, ("accuracy",), "accuracy", ("nyu-mll/glue", "rte"), label_names=NLI2,
             glue=GlueLayout("RTE", text="sentence1", pair="sentence2", label="label"),
             description="RTE entailment"),
    TaskSpec("squad_v2", "qa", 0, ("exact", "f1"), "f1", ("rajpurkar/squad_v2", None),
             description="SQuAD 2.0 extractive QA with unanswerable questions (EM / F1)"),
    TaskSpec("squad", "qa", 0, ("exact", "f1"), "f1", ("rajpurkar/squad", None),
             description="SQuAD 1.1 extractive QA (EM / F1)"),
    TaskSpec("rotten_tomatoes", "single", 2, ("accuracy", "f1"), "accuracy", builtin="rotten_tomatoes",
             description="built-in: Rotten Tomatoes fresh/rotten (offline)"),
    TaskSpec("drug_reviews", "single", 3, ("accuracy", "macro_f1"), "accuracy", builtin="drug_reviews",
             description="built-in: drug reviews, 3 classes (offline)"),
    TaskSpec("rotten_tomatoes_sft", "sft", 0, ("loss", "perplexity"), "perplexity", builtin="rotten_tomatoes",
             description="built-in: Rotten Tomatoes as instructions (review -> positive / negative), causal LM"),
]}

GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")
