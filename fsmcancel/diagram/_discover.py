"""
Finding the machines a ``fsmcancel diagram`` target names.

Owns: importing targets and walking modules, packages and classes.  Must
not touch: what counts as a machine (``_machines``) or drawing.

A target is ``module``, ``package`` (the package and its public submodules)
or ``module:attribute.path``.  In a module (or class)
we look at module-level values and, recursively, at the attributes of
classes *defined there* -- Automat's ``MethodicalMachine`` is conventionally
a class attribute -- but not into imported classes, whose machines belong to
the module that defines them.  Values are visited in definition order, so
the output order is stable, and the same machine reached twice (re-exported,
or a factory and its spec) is drawn once.

A target that names nothing drawable is an error rather than an empty
result: a typo in a CI command must not pass ``--check`` by checking nothing.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from fsmcancel.core._spec import MachineSpec
from fsmcancel.diagram._from_automat import is_automat_machine, spec_from_automat
from fsmcancel.diagram._machines import spec_attribute


class TargetError(Exception):
    """
    A target could not be imported or holds no machines.
    """


@dataclass(frozen=True)
class FoundMachine:
    """
    A machine and where it was found (``module:qualified.name``).
    """

    where: str
    spec: MachineSpec


def _as_machine(value: object) -> tuple[int, MachineSpec] | None:
    """
    ``(identity, spec)`` if ``value`` is drawable; identity dedupes.
    """
    if isinstance(value, MachineSpec):
        return id(value), value
    if inspect.isclass(value) or isinstance(value, ModuleType):
        return None
    spec = spec_attribute(value)
    if spec is not None:
        return id(spec), spec
    if is_automat_machine(value):
        return id(value), spec_from_automat(value)
    return None


def _scan(namespace: dict[str, object], prefix: str, module: str) -> Iterator[tuple[str, object]]:
    for name, value in list(namespace.items()):
        if name.startswith("__"):
            continue
        qualname = f"{prefix}{name}"
        yield qualname, value
        if inspect.isclass(value) and value.__module__ == module and value.__qualname__ == qualname:
            yield from _scan(dict(vars(value)), f"{qualname}.", module)


def _collect(
    where: str,
    items: Iterator[tuple[str, object]],
    module: str,
    seen: set[int] | None = None,
    required: bool = True,
) -> list[FoundMachine]:
    found: list[FoundMachine] = []
    seen = set() if seen is None else seen
    for qualname, value in items:
        machine = _as_machine(value)
        if machine is not None and machine[0] not in seen:
            seen.add(machine[0])
            found.append(FoundMachine(f"{module}:{qualname}", machine[1]))
    if not found and required:
        raise TargetError(f"{where}: no fsmcancel operations or Automat machines found")
    return found


def _package(target: str, package: ModuleType) -> list[FoundMachine]:
    """
    A package target covers the package and every public submodule, so
    ``fsmcancel diagram --check examples`` cannot miss a new example.
    Private modules (a name part starting with ``_``) are skipped.
    """
    seen: set[int] = set()
    found = _collect(
        target,
        _scan(dict(vars(package)), "", package.__name__),
        package.__name__,
        seen,
        required=False,
    )
    prefix = package.__name__ + "."
    for info in sorted(pkgutil.walk_packages(package.__path__, prefix), key=lambda i: i.name):
        if any(part.startswith("_") for part in info.name[len(prefix) :].split(".")):
            continue
        module = _import(target, info.name)
        found += _collect(
            target,
            _scan(dict(vars(module)), "", module.__name__),
            module.__name__,
            seen,
            required=False,
        )
    if not found:
        raise TargetError(f"{target}: no fsmcancel operations or Automat machines found")
    return found


def _import(target: str, module_name: str) -> ModuleType:
    if not module_name:
        raise TargetError(f"{target!r}: no module named before the colon")
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise TargetError(f"{target}: no module named {missing!r}") from e
        raise TargetError(f"{target}: importing {module_name!r} failed: {e}") from e


def find_machines(target: str) -> list[FoundMachine]:
    """
    Every machine ``target`` names, in definition order.

    Raises :class:`TargetError` naming the target if the module cannot be
    found, the attribute does not exist or is not a machine, or there are no
    machines in it.
    """
    module_name, _, path = target.partition(":")
    module = _import(target, module_name)
    if not path and hasattr(module, "__path__"):
        return _package(target, module)
    if not path:
        return _collect(target, _scan(dict(vars(module)), "", module.__name__), module.__name__)
    value: object = module
    for part in path.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise TargetError(f"{target}: {module_name!r} has no attribute {path!r}") from None
    if inspect.isclass(value):
        items = _scan(dict(vars(value)), f"{path}.", value.__module__)
        return _collect(target, items, module.__name__)
    machine = _as_machine(value)
    if machine is None:
        raise TargetError(
            f"{target} is not an fsmcancel operation or Automat machine "
            f"(it is {type(value).__module__}.{type(value).__qualname__})"
        )
    return [FoundMachine(target, machine[1])]
