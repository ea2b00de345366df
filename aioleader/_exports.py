"""Public names for what a package re-exports from its private modules (anyio's
``fix_package_names()``, trio's ``fixup_module_metadata``).

Each package ``__init__`` ends with ``publish(globals())``: every class and function in its
``__all__`` that is defined in one of its private modules then reports the package as its
``__module__``, so reprs, tracebacks and pickles say ``aioleader.Leadership``, not
``aioleader._leadership.Leadership``. Pickling finds the object under the public name (it is
exported there). ``typing.get_type_hints()`` looks up a class's string annotations in the module its
``__module__`` names; so that keeps working, class annotations are resolved in the defining module
first.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

__all__ = ["publish"]


def publish(namespace: dict[str, Any]) -> None:
    """Make the package whose globals are ``namespace`` the ``__module__`` of its exports."""
    package = namespace["__name__"]
    private = package + "._"
    for name in namespace["__all__"]:
        obj = namespace[name]
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not obj.__module__.startswith(private):
            continue  # defined in the package itself, or exported from another package
        if inspect.isclass(obj):
            _resolve_annotations(obj)
        obj.__module__ = package


def _resolve_annotations(cls: type) -> None:
    own = inspect.get_annotations(cls)
    if not own:
        return
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except (NameError, TypeError):  # pragma: no cover - a name only imported for type checkers
        return  # left as it was; tests/test_exports.py checks every public class resolves
    cls.__annotations__ = {name: hints.get(name, value) for name, value in own.items()}
