"""The base of every error a user can act on: :class:`FernbError`.

fernb's own errors (a config field out of range, a data root that does not exist, a checkpoint that cannot be read, a
run folder that another process holds, ...) all derive from it, and their message names the file or the field and
what to do. The command line prints ``error: <message>`` for them (the traceback only with ``--debug``), and
:func:`fernb.notebooks.short_errors` shows notebooks the same one line.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["FernbError", "UnknownNameError", "short_errors"]


class FernbError(Exception):
    """An error whose message is the whole story: the file or the field, what was wrong, and what to do."""


class UnknownNameError(FernbError, KeyError):
    """A name no registry knows (model, loss, dataset, ...); the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


def short_errors(on: bool = True) -> bool:
    """In IPython (a notebook kernel), show a :class:`FernbError` as its message alone (``DataRootError: <what was
    wrong and what to do>``) instead of a traceback through fernb's internals; other errors keep their traceback.
    ``$FERNB_DEBUG=1`` or ``short_errors(False)`` keeps full tracebacks. Returns True when a handler was installed.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    if not on or os.environ.get("FERNB_DEBUG", "") not in ("", "0"):
        shell.set_custom_exc((), None)
        return False

    def show(shell: Any, etype: type, value: BaseException, tb: object, tb_offset: int | None = None) -> list[str]:
        stb = [f"{etype.__name__}: {value}", "(FERNB_DEBUG=1 or fernb.errors.short_errors(False): full tracebacks)"]
        shell._showtraceback(etype, value, stb)  # the kernel's error output: the cell fails as before, in one message
        return stb

    shell.set_custom_exc((FernbError,), show)
    return True
