"""The machinery of the checks in app/internals/: a Library, the Uses of it our files rely on, and
the checks they are made of. Imports nothing of app, so every module here can use it."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata

Check = Callable[[], "str | None"]  # None when the internal is as the using code expects; else the problem


HEADLINE = "LeadWheel cannot start: a library changed under code that reaches into its internals."


class InternalsChanged(RuntimeError):
    """A library no longer has an internal our code relies on."""


@dataclass(frozen=True, slots=True)
class Use:
    """One private name or behaviour of a library that one of our files relies on."""

    target: str  # what, in the library's terms: "graphql.execution.Executor._relevant_sub_fields"
    used_in: str  # our file(s) that rely on it
    check: Check


@dataclass(frozen=True, slots=True)
class Library:
    distribution: str  # the name pyproject.toml and uv.lock give it
    written_against: str
    module: str  # the module of app/internals/ that holds its uses: the one to update
    uses: tuple[Use, ...]

    def found_version(self) -> str:
        try:
            return metadata.version(self.distribution)
        except metadata.PackageNotFoundError:
            return "not installed"

    def problems(self) -> list[str]:
        found = []
        for use in self.uses:
            try:
                problem = use.check()
            except Exception as exc:  # noqa: BLE001  (a check that cannot even run is a failed check)
                problem = f"the check failed: {type(exc).__name__}: {exc}"
            if problem is not None:
                found.append(f"{use.target} (used by {use.used_in}): {problem}")
        return found

    def failure(self, problems: Iterable[str]) -> str:
        return "\n".join(
            [
                f"{self.distribution} {self.found_version()} is installed; {self.module} was written "
                f"against {self.written_against}:",
                *(f"  - {problem}" for problem in problems),
                f"Update {self.module} and the code it names, or install the locked versions "
                "(scripts/setup.sh).",
            ]
        )


def import_failure(
    distribution: str, written_against: str, module: str, error: ImportError
) -> InternalsChanged:
    """For a module here whose private imports fail: the same message as a failed check."""
    library = Library(distribution, written_against, module, ())
    return InternalsChanged("\n".join([HEADLINE, library.failure([f"cannot import: {error}"])]))


# --- checks -------------------------------------------------------------------------------------


def has(owner: object, *names: str) -> Check:
    """The attributes exist on owner (a class, module or object)."""

    def check() -> str | None:
        missing = [name for name in names if not hasattr(owner, name)]
        return f"{_name(owner)} has no {', '.join(missing)}" if missing else None

    return check


def takes(owner: object, name: str, parameters: tuple[str, ...]) -> Check:
    """owner.name exists and is called with exactly these parameters (names, in order, self included
    for a method looked up on its class): our override or call matches what the library does."""

    def check() -> str | None:
        function = getattr(owner, name, None)
        if function is None:
            return f"{_name(owner)} has no {name}"
        found = tuple(inspect.signature(function).parameters)
        if found != parameters:
            return f"{_name(owner)}.{name}{_signature(found)} is no longer {name}{_signature(parameters)}"
        return None

    return check


def takes_keyword(owner: object, name: str, keyword: str) -> Check:
    """owner.name still has a parameter of this name."""

    def check() -> str | None:
        function = getattr(owner, name, None)
        if function is None:
            return f"{_name(owner)} has no {name}"
        if keyword not in inspect.signature(function).parameters:
            return f"{_name(owner)}.{name} no longer takes {keyword}"
        return None

    return check


def _signature(parameters: tuple[str, ...]) -> str:
    return f"({', '.join(parameters)})"


def _name(owner: object) -> str:
    if inspect.ismodule(owner):
        return owner.__name__
    kind = owner if isinstance(owner, type) else type(owner)
    return f"{kind.__module__}.{kind.__qualname__}"
