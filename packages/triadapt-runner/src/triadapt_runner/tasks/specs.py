"""The task registry: what each task's data looks like and how it is scored.

Kinds: ``single`` (one text, classification), ``pair`` (two texts, classification),
``regression`` (two texts, a score), ``qa`` (extractive question answering, SQuAD format),
``sft`` (causal LM on prompt/response records, the loss on the response) and ``lm`` (causal
LM on plain text). The 8 GLUE tasks of the paper are declared with their
hub names, the official TSV layout of the GLUE download, and their metrics; two built-in
offline datasets are declared too. ``custom`` reads any CSV/JSON/Parquet file.
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
    kind: str  # single | pair | regression
    num_labels: int  # 1 for regression
    metrics: tuple[str, ...]
    main_metric: str
    hub: tuple[str, str] | None = None  # (dataset path, config name) on the Hugging Face hub
    label_names: tuple[str, ...] = ()  # for string labels in files: index = label id
    glue: GlueLayout | None = None
    builtin: str | None = None
    description: str = ""
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "validation": "validation"})
    lower_is_better: bool = False  # the main metric (perplexity) is minimised

    def better(self, a: float, b: float) -> bool:
        """Whether main-metric value ``a`` beats ``b``."""
        return a < b if self.lower_is_better else a > b

    @property
    def is_regression(self) -> bool:
        return self.kind == "regression"

    @property
    def is_qa(self) -> bool:
        return self.kind == "qa"

    @property
    def is_causal_lm(self) -> bool:
        return self.kind in ("sft", "lm")


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
             lower_is_better=True,
             description="built-in: Rotten Tomatoes as instructions (review -> positive / negative), causal LM"),
]}

CAUSAL_LM_METRICS = ("loss", "perplexity")

GLUE_TASKS = ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte")


def custom_task(kind: str, num_labels: int) -> TaskSpec:
    """A task over user files; metrics follow the kind."""
    if kind in ("sft", "lm"):
        return TaskSpec("custom", kind, 0, CAUSAL_LM_METRICS, "perplexity", lower_is_better=True)
    if kind == "regression":
        return TaskSpec("custom", "regression", 1, ("pearson", "spearman"), "pearson")
    metrics = ("accuracy", "f1") if num_labels == 2 else ("accuracy", "macro_f1")
    return TaskSpec("custom", kind, num_labels, metrics, "accuracy")
