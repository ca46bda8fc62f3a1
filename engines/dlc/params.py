"""DeepLabCut's parameters that posed does not act on: renamed, without effect, or refused.

posed's compat layer takes DeepLabCut's signatures whole. A parameter posed cannot honour is
either without effect on any output (accepted; one warning line names it when it is given a
value other than its default) or would change the output (refused with one line). Renamed
parameters are accepted under their old names, as DeepLabCut's own ``renamed_parameter``
decorator does.
"""

from __future__ import annotations

import logging
from typing import Any

from posed.errors import CapabilityError

__all__ = ["no_effect", "refuse", "renamed", "take_options"]

log = logging.getLogger("posed.compat")


def renamed(function: str, kwargs: dict[str, Any], old: str, new: str, value: Any,
            default: Any = None) -> Any:
    """``value`` of ``new``, or the one passed under the old name ``old`` (popped)."""
    if old not in kwargs:
        return value
    if value is not default and value != default:
        raise TypeError(f"{function}() received both '{old}' and '{new}'; use only '{new}'")
    return kwargs.pop(old)


def no_effect(function: str, **given: tuple[Any, Any, str]) -> None:
    """Warn once per parameter given a non-default value that changes no output.

    Each keyword is ``name=(value, default, why)``.
    """
    for name, (value, default, why) in given.items():
        if not _same(value, default):
            log.warning("%s: %s=%r has no effect in posed (%s); ignored", function, name, value, why)


def refuse(function: str, **given: tuple[Any, Any, str]) -> None:
    """Refuse a parameter given a non-default value that posed cannot honour.

    Each keyword is ``name=(value, default, why)``.

    Raises:
        CapabilityError: one line naming the function, the parameter and why.
    """
    for name, (value, default, why) in given.items():
        if not _same(value, default):
            raise CapabilityError(f"{function}: {name}={value!r} is not supported by posed ({why})")


def take_options(function: str, kwargs: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    """The keyword arguments a ``**kwargs`` may carry; any other is a TypeError, as in Python."""
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise TypeError(f"{function}() got an unexpected keyword argument '{unknown[0]}' "
                        f"(accepted: {', '.join(allowed)})")
    return dict(kwargs)


def _same(value: Any, default: Any) -> bool:
    if value is default:
        return True
    try:
        return bool(value == default)
    except Exception:  # arrays and other values without a plain truth value  # noqa: BLE001
        return False
