"""Exception types raised by triadapt.

Every message names the offending field / file / value and says what would be valid.
"""


class TriAdaptError(Exception):
    """Base class of every error raised on purpose by triadapt."""


class ConfigError(TriAdaptError, ValueError):
    """A configuration field holds an invalid value."""

    def __init__(self, field: str, value: object, valid: str):
        self.field, self.value, self.valid = field, value, valid
        super().__init__(f"{field}={value!r} is invalid: {valid}")


class StrategyConfigError(ConfigError):
    """A strategy refused its configuration: the message names the strategy and, for a plugin's, the plugin and its
    distribution, so that the user knows which package to look at. The strategy's own error is the ``__cause__``."""

    def __init__(self, field: str, value: object, valid: str, *, kind: str, strategy: str, provider: str):
        self.kind, self.strategy, self.provider = kind, strategy, provider
        super().__init__(field, value, valid)


class StrategyOptionError(StrategyConfigError):
    """One of ``strategy_options.<strategy>`` is unknown, ill-typed or missing."""


class TargetError(TriAdaptError, ValueError):
    """Target module patterns that match no adaptable layer of the model."""


class AdapterLoadError(TriAdaptError, ValueError):
    """A saved adapter does not fit the model it is loaded into, or is damaged."""


class PluginError(TriAdaptError, RuntimeError):
    """A plugin failed to load or registered a conflicting strategy name."""


class UnknownStrategyError(TriAdaptError, KeyError):
    """A strategy name that no installed plugin provides."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"{kind}={name!r} is unknown: available {kind}s are {', '.join(sorted(known))}")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return self.args[0]
