"""Runner errors: one line naming the field / file, the value and what would be valid."""

from triadapt.errors import TriAdaptError


class RunnerError(TriAdaptError, ValueError):
    """Bad input to the runner (config, grid file, CLI argument, data file)."""


def invalid(field: str, value: object, valid: str) -> RunnerError:
    return RunnerError(f"{field}={value!r} is invalid: {valid}")
