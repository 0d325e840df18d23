"""Official checkpoint key names -> fernb's, written as ordered tables of ``(pattern, replacement)`` rules.

Every family's conversion is a table (a list of rules, often built from its config's block counts) read by
:func:`rename_key`. A rule's pattern is a regular expression searched in the key; its replacement is

- a template (``r"stages.0.\\1."``: ``re`` group references),
- a function of the match returning the new text, :data:`DROP`, or None (the rule declines the key), or
- :data:`DROP`: the key belongs to an official module fernb does not build; the converter reports it as dropped.

Rules are applied top to bottom, each to the key as the rules above left it, so a table can either rename a key in
one anchored rule (``^...$``, as POSTER_V2's tables do: an output never matches a later rule) or rewrite independent
parts of it in turn (MA-Net: the stage prefix, then the multi-scale path, then the CBAM).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from typing import Final

__all__ = ["DROP", "Rule", "Rules", "rename_key", "rename", "under", "MODULE_PREFIX"]


class _Drop:
    """Type of :data:`DROP`."""

    def __repr__(self) -> str:
        return "DROP"


DROP: Final = _Drop()

Replacement = str | Callable[[re.Match[str]], "str | _Drop | None"] | _Drop
Rule = tuple[str, Replacement]
Rules = Sequence[Rule]

# DataParallel / DDP checkpoints put "module." before every key.
MODULE_PREFIX: tuple[Rule, ...] = ((r"^module\.", ""),)


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def rename_key(key: str, rules: Rules) -> str | _Drop | None:
    """``key`` rewritten by every rule of ``rules`` that matches it, in order (first occurrence of each pattern).

    Returns:
        The new key; :data:`DROP` as soon as a rule drops it; None when no rule matched (or every matching rule
        declined).
    """
    matched = False
    for pattern, repl in rules:
        m = _compiled(pattern).search(key)
        if m is None:
            continue
        new = repl if isinstance(repl, _Drop) else m.expand(repl) if isinstance(repl, str) else repl(m)
        if new is None:
            continue
        if isinstance(new, _Drop):
            return DROP
        key, matched = key[: m.start()] + new + key[m.end() :], True
    return key if matched else None


def rename(key: str, rules: Rules) -> str:
    """:func:`rename_key` for tables that drop nothing: the new key, or ``key`` unchanged when no rule matched.

    Raises:
        ValueError: a rule dropped the key (use :func:`rename_key` with such tables).
    """
    new = rename_key(key, rules)
    if isinstance(new, _Drop):
        raise ValueError(f"{key!r} was dropped by a table given to rename(); use rename_key()")
    return key if new is None else new


def under(rules: Rules, source: str, target: str = "") -> list[Rule]:
    """The anchored ``rules`` of a sub-module, for keys under the literal prefix ``source``, with ``target`` put before
    what they produce (``under(IR_RULES, "ir_back.", "image.")``)."""
    out: list[Rule] = []
    for pattern, repl in rules:
        if not pattern.startswith("^"):
            raise ValueError(f"under() needs anchored patterns (^...), got {pattern!r}")
        new: Replacement
        if isinstance(repl, _Drop):
            new = repl
        elif isinstance(repl, str):
            new = target + repl
        else:
            new = functools.partial(_prefixed, repl, target)
        out.append(("^" + re.escape(source) + pattern[1:], new))
    return out


def _prefixed(fn: Callable[[re.Match[str]], str | _Drop | None], target: str, m: re.Match[str]) -> str | _Drop | None:
    new = fn(m)
    return target + new if isinstance(new, str) else new
