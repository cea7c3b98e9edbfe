"""`TriAdaptConfig`: every knob of TriAdaptLoRA, validated on construction.

Defaults follow the paper (arXiv 2501.08008, Table V) where it gives one. A worked
schedule: with ``warmup_steps=100, growth_interval=100, total_steps=1000`` growth events
happen after optimizer steps 200, 300, ..., 1000 (``t > t0`` and ``t % ΔT == 0``), each
growing ``k`` matrices by ``rank_increment`` until the budget ``ref_rank * M`` is spent.

Given T and not t0 / ΔT, the config derives the paper's regime, t0 = ΔT = max(1, round(T/50))
(`regime_interval`: about 50 growth intervals, as in the paper's runs), again whenever T changes
(`replace`, ``Controller.set_total_steps``). Explicit values always win.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from triadapt.errors import ConfigError

ROUNDINGS = ("ceil", "floor")
EVENTS_PER_RUN = 50  # T / ΔT of the derived regime: the paper's runs have 33-86 growth intervals
LEGACY_INTERVAL = 1000  # t0 = ΔT when neither they nor T are given (deprecated, see TriAdaptConfig.uses_legacy_interval)
REGIME_FIELDS = ("warmup_steps", "growth_interval")
CORE_INITS = ("gaussian", "identity")


def _help(text: str, **kwargs: Any) -> Any:
    return field(metadata={"help": text}, **kwargs)


@dataclass
class TriAdaptConfig:
    """Configuration of TriAdaptLoRA adapters and their rank growth."""

    structure: str = _help("How ΔW is parametrised: 'triangular' (B(L+U)A) or 'lora' (BA).", default="triangular")
    scorer: str = _help("Importance score at growth events: 'fnorm', 'fnorm-sqrt' or 'fnorm-raw'.", default="fnorm")
    threshold: str = _help("How many matrices grow per event: 'linear', 'nonlinear', 'fixed' or 'none'.",
                           default="linear")
    target_modules: list[str] | str | None = _help(
        "Layer-name suffixes (list) or one regular expression (str) to adapt; None uses the default set of the "
        "model's architecture.", default=None)
    trainable_modules: list[str] | None = _help(
        "Extra modules trained in full and saved with the adapter (e.g. a classification head); None picks the "
        "usual head names ('classifier', 'score', 'qa_outputs') present in the model.", default=None)
    init_rank: int = _help("Initial rank r_init of every adapted matrix (paper: 1).", default=1)
    rank_increment: int = _help("Rank added to a matrix chosen at a growth event (Δr).", default=1)
    ref_rank: int = _help("Reference rank r_ref: the total budget is ref_rank × number of matrices.", default=8)
    total_budget: int | None = _help("Explicit total rank budget R0 (overrides ref_rank × M).", default=None)
    max_rank: int | None = _help(
        "Reserved capacity per matrix; None means init_rank with a threshold that never grows ('none'), else "
        "max(init_rank, 2×ref_rank).", default=None)
    warmup_steps: int | None = _help(
        "t0: optimizer steps before the first possible growth event; None: max(1, round(T/50)) once total_steps "
        "is known (the paper's regime).", default=None)
    growth_interval: int | None = _help(
        "ΔT: a growth event may happen every ΔT optimizer steps; None: max(1, round(T/50)) once total_steps is "
        "known (the paper's regime).", default=None)
    total_steps: int | None = _help(
        "T: total optimizer steps of the run (needed by 'linear'/'nonlinear'; trainers set it).", default=None)
    rounding: str = _help("Rounding of k: 'ceil' (paper) or 'floor' (reference code).", default="ceil")
    fixed_k: int | None = _help("k for threshold 'fixed'.", default=None)
    lora_alpha: float = _help("α: the update is scaled by α / (r + ε) with r the current rank.", default=16.0)
    dropout: float = _help("Dropout on the adapter input.", default=0.0)
    init_std: float = _help("σ of the N(0, σ²) draws for A, L, U and grown B entries.", default=0.02)
    core_init: str = _help(
        "Start of the core D = L + U: 'gaussian' (reference: every entry N(0, σ²)) or 'identity' (I plus those "
        "draws, so ΔW starts like LoRA's BA and short runs learn sooner; scores then use ‖D − I‖_F).",
        default="gaussian")
    eps: float = _help("ε in the scale α / (r + ε).", default=1e-5)
    orth_reg_weight: float = _help("λ of the orthogonal regulariser (0 disables it).", default=0.1)
    orth_reg_squared: bool = _help("Use the squared Frobenius norm (literal Eq. 10).", default=False)
    seed: int | None = _help("Seed of the adapter initialisation (None: torch's global generator).", default=None)
    strategy_options: dict[str, Any] = _help(
        "Options of the chosen strategies, keyed by strategy name, e.g. {'sensitivity': {'beta1': 0.9}}; each is "
        "checked against the options (names and types) its strategy declares.", default_factory=dict)
    # t0 / ΔT fields the user left out (None): derived from T, and derived again by replace()
    _derived: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    # the threshold's own `grows`, asked when the config is validated (see threshold_grows)
    _grows: bool = field(default=True, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._derive_regime()
        self._check_types()
        self._check_ranges()
        self._check_strategies()

    def _derive_regime(self) -> None:
        self._derived = tuple(name for name in REGIME_FIELDS if getattr(self, name) is None)
        if not self._derived:
            return
        t = self.total_steps
        known = isinstance(t, int) and not isinstance(t, bool) and t >= 1  # an invalid T is reported below
        for name in self._derived:
            setattr(self, name, regime_interval(t) if known else LEGACY_INTERVAL)

    @property
    def uses_legacy_interval(self) -> bool:
        """True when t0 / ΔT are the placeholder 1000 of releases before 0.2 (neither they nor T given)."""
        return bool(self._derived) and self.total_steps is None

    # -- validation -------------------------------------------------------------------------------
    def _check_types(self) -> None:
        ints = ("init_rank", "rank_increment", "ref_rank", "warmup_steps", "growth_interval")
        for name in ints:
            _require_int(name, getattr(self, name))
        for name in ("total_budget", "max_rank", "total_steps", "fixed_k", "seed"):
            if getattr(self, name) is not None:
                _require_int(name, getattr(self, name))
        for name in ("lora_alpha", "dropout", "init_std", "eps", "orth_reg_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(name, value, "must be a number")
        t = self.target_modules
        if t is not None and not isinstance(t, str) and not (
                isinstance(t, (list, tuple)) and t and all(isinstance(x, str) and x for x in t)):
            raise ConfigError("target_modules", t, "must be None, a regular expression or a non-empty list of names")
        if isinstance(t, str):
            _check_regex("target_modules", t)
        m = self.trainable_modules
        if m is not None and not (isinstance(m, (list, tuple)) and all(isinstance(x, str) and x for x in m)):
            raise ConfigError("trainable_modules", m, "must be None or a list of module names")
        if not isinstance(self.strategy_options, dict):
            raise ConfigError("strategy_options", self.strategy_options, "must be a dict keyed by strategy name")

    def _check_ranges(self) -> None:
        _at_least("init_rank", self.init_rank, 1)
        _at_least("rank_increment", self.rank_increment, 1)
        _at_least("ref_rank", self.ref_rank, 1)
        _at_least("warmup_steps", self.warmup_steps, 0)
        _at_least("growth_interval", self.growth_interval, 1)
        if self.total_budget is not None:
            _at_least("total_budget", self.total_budget, 1)
        if self.max_rank is not None and self.max_rank < self.init_rank:
            raise ConfigError("max_rank", self.max_rank, f"must be >= init_rank ({self.init_rank})")
        if self.rounding not in ROUNDINGS:
            raise ConfigError("rounding", self.rounding, f"must be one of {', '.join(ROUNDINGS)}")
        if self.core_init not in CORE_INITS:
            raise ConfigError("core_init", self.core_init, f"must be one of {', '.join(CORE_INITS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout", self.dropout, "must be in [0, 1)")
        if self.init_std <= 0:
            raise ConfigError("init_std", self.init_std, "must be > 0 (a zero init leaves every gradient zero)")
        if self.eps < 0:
            raise ConfigError("eps", self.eps, "must be >= 0")
        if self.lora_alpha <= 0:
            raise ConfigError("lora_alpha", self.lora_alpha, "must be > 0")
        if self.orth_reg_weight < 0:
            raise ConfigError("orth_reg_weight", self.orth_reg_weight, "must be >= 0 (0 disables the regulariser)")

    def _check_strategies(self) -> None:
        """The names, each strategy's options, and what the threshold says of itself.

        The threshold is built (thresholds are small) so that the config asks it rather than knowing names:
        its factory checks the fields it needs (``fixed_k`` for 'fixed'), and its ``grows`` decides the
        capacity and whether T must leave room for an event, for a plugin's threshold as for 'none'.
        """
        from triadapt.plugins.registry import registry  # imported on use: the registry imports torch

        current = registry()
        for kind in ("structure", "scorer", "threshold"):
            current.get(kind, getattr(self, kind))  # raises UnknownStrategyError listing the known names
        for kind in ("structure", "scorer"):
            name = getattr(self, kind)
            current.resolve_options(kind, name, self.strategy_options.get(name))
        threshold = current.create("threshold", self.threshold, self)  # resolves its options too
        self._grows = bool(threshold.grows)
        if self.total_steps is not None and self.total_steps <= self.warmup_steps and self._grows:
            raise ConfigError("total_steps", self.total_steps,
                              f"must be > warmup_steps ({self.warmup_steps}) so that growth can happen")

    # -- derived values ----------------------------------------------------------------------------
    @property
    def threshold_grows(self) -> bool:
        """The threshold's ``grows``: False for one that never grows ('none', or a plugin's), whose matrices keep
        their initial rank: capacity init_rank, no growth schedule."""
        return self._grows

    @property
    def capacity(self) -> int:
        """Ranks reserved per matrix (parameters exist for all of them from construction on)."""
        if self.max_rank is not None:
            return self.max_rank
        if not self._grows:
            return self.init_rank
        return max(self.init_rank, 2 * self.ref_rank)

    def budget(self, num_matrices: int) -> int:
        """Total rank budget R0 (Eq. 12): explicit, or ref_rank × M."""
        return self.total_budget if self.total_budget is not None else self.ref_rank * num_matrices

    def replace(self, **changes: Any) -> "TriAdaptConfig":
        """A validated copy with some fields changed (t0 / ΔT derived from T are derived again)."""
        rederive = {name: None for name in self._derived if name not in changes}
        return dataclasses.replace(self, **rederive, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every field as given: t0 / ΔT that were derived are None, so a config rebuilt from it derives them
        again (from its T, and again when T changes)."""
        data = copy.deepcopy({f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init})
        data.update({name: None for name in self._derived})
        if isinstance(data["target_modules"], tuple):
            data["target_modules"] = list(data["target_modules"])
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TriAdaptConfig":
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], data[unknown[0]], f"is not a TriAdaptConfig field; fields are "
                                                            f"{', '.join(sorted(known))}")
        return cls(**data)


def regime_interval(total_steps: int) -> int:
    """t0 = ΔT of the paper's regime for a run of T optimizer steps: about 50 growth intervals."""
    return max(1, round(total_steps / EVENTS_PER_RUN))


def _require_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "must be an integer")


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ConfigError(name, value, f"must be >= {low}")


def _check_regex(name: str, pattern: str) -> None:
    import re

    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError(name, pattern, f"is not a valid regular expression ({exc})") from None
