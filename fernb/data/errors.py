"""Errors a user can act on: each names the file (and line), what was expected, and what to do."""

from __future__ import annotations

from pathlib import Path

from ..errors import FernbError

__all__ = ["FernbDataError", "DataRootError", "DataFormatError", "CorruptImageError", "EmptySplitError"]


class FernbDataError(FernbError):
    """Base class of fernb's data errors."""


class DataRootError(FernbDataError, FileNotFoundError):
    """The data root is missing or does not have the dataset's published layout."""

    def __init__(self, dataset: str, root: str | Path | None, problem: str, layout: str, env_var: str | None = None):
        self.dataset, self.root, self.problem, self.layout = dataset, root, problem, layout
        hint = f" or set ${env_var}" if env_var else ""
        msg = (
            f"{dataset}: {problem}\n"
            f"  data root: {root if root is not None else '(none given)'}\n"
            f"  expected layout:\n{_indent(layout, 4)}\n"
            f"  what to do: download {dataset} from its publisher, unpack it as above, and pass root=...{hint}."
        )
        super().__init__(msg)


class DataFormatError(FernbDataError, ValueError):
    """A label file, CSV row or annotation that does not parse, or a label out of range."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None, expected: str | None = None):
        self.path, self.line, self.problem = Path(path), line, problem
        where = f"{path}, line {line}" if line is not None else f"{path}"
        msg = f"{where}: {problem}"
        if expected:
            msg += f"\n  expected: {expected}"
        super().__init__(msg)


class CorruptImageError(FernbDataError, OSError):
    """An image file that cannot be decoded (truncated, empty, not an image)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        super().__init__(
            f"{path}: cannot read image ({reason}).\n"
            f"  what to do: re-extract or re-download this file, or remove it from the split (and its label line)."
        )


class EmptySplitError(FernbDataError, ValueError):
    """A split that holds no sample after filtering."""

    def __init__(self, dataset: str, split: str, source: str | Path, detail: str = ""):
        super().__init__(
            f"{dataset}: split {split!r} is empty (read from {source}){': ' + detail if detail else ''}.\n"
            f"  what to do: check the split name and the label space, and that the images are where the labels say."
        )


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line for line in text.strip("\n").splitlines())
