"""Where a run's method and strategies came from: the distribution and version that registered each name."""

from __future__ import annotations

from typing import Any

from triadapt_runner.methods.registry import methods


def provenance_tags(cfg: Any) -> dict[str, str]:
    """``provider.approach`` and ``provider.<kind>`` for each strategy the method uses, as ``dist==version``.

    Logged on every cell run (prefixed ``triadapt.``), so a grid records which package provided each row's
    method and strategies, and which release of it.
    """
    from triadapt.plugins import registry

    method = methods().get(cfg.approach)
    tags = {"provider.approach": "==".join(methods().provider(cfg.approach))}
    for kind, name in method.strategy_tags(cfg).items():
        tags[f"provider.{kind}"] = "==".join(registry().provider(kind, name))
    return tags
