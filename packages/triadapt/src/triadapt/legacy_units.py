"""The 0.1 form of a rank unit, for `AdapterLayer.active_units()` until 0.3.

In 0.1 every rank unit was a small module holding its own parameters, and ``active_units()``
yielded those modules: a scorer called ``unit.parameters()``, ``unit.named_parameters()`` or
``unit.tensors()`` and read each parameter's ``.grad``. Since 0.2 the units are the rows of one
parameter per matrix (`triadapt.unit_storage`) and their tensors are views of a row, which
``active_unit_tensors()`` yields as dicts. `LegacyUnit` is such a mapping that also answers the 0.1
calls. Its tensors behave as 0.1's parameters did: leaves that share the row's storage (an in-place
change under ``no_grad`` changes the unit) with the parameter's ``requires_grad``, carrying their
part of ``units.grad`` as ``.grad``, so 0.1 code reads the same values as before (a view of a row is
not a leaf: autograd would fill no ``.grad`` of its own, and reading it would warn).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from torch import Tensor


class LegacyUnit(Mapping[str, Tensor]):
    """One rank unit: its tensors by name (a mapping, as 0.2 hands them out) with the 0.1 module calls."""

    def __init__(self, views: Mapping[str, Tensor], grads: Mapping[str, Tensor] | None, requires_grad: bool):
        self._tensors = {key: view.detach().requires_grad_(requires_grad) for key, view in views.items()}
        if grads is not None:
            for key, tensor in self._tensors.items():
                tensor.grad = grads[key]

    def __getitem__(self, key: str) -> Tensor:
        return self._tensors[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __getattr__(self, key: str) -> Tensor:  # unit.a, as a module's parameter attribute
        tensors = self.__dict__.get("_tensors", {})
        if key in tensors:
            return tensors[key]
        raise AttributeError(f"rank unit has no tensor {key!r}; it has {', '.join(tensors)}")

    def parameters(self, recurse: bool = True) -> Iterator[Tensor]:
        return iter(self._tensors.values())

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        return ((f"{prefix}.{key}" if prefix else key, tensor) for key, tensor in self._tensors.items())

    def tensors(self) -> dict[str, Tensor]:
        return dict(self._tensors)
