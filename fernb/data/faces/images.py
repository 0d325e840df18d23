"""Photographs to try the pipeline on: the bundled examples and a folder of your own."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ..base import read_image

EXAMPLE_IMAGE_SOURCES: dict[str, str] = {
    "astronaut": "scikit-image skimage.data.astronaut(): Eileen Collins, NASA photograph, public domain.",
    "grace_hopper": (
        "matplotlib sample_data/grace_hopper.jpg: Commodore Grace M. Hopper, official U.S. Navy photograph "
        "(work of the U.S. federal government), public domain."
    ),
    "camera": (
        "scikit-image skimage.data.camera(): cameraman by Lav Varshney, CC0; the face is in near profile, "
        "so the frontal detector misses it (it shows the fallback)."
    ),
}


def example_images(names: Iterable[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """Public-domain photographs of people that ship inside installed wheels (nothing is downloaded).

    Args:
        names: subset of :data:`EXAMPLE_IMAGE_SOURCES` keys; default all, astronaut first.

    Returns:
        ``(name, pixels)`` pairs; pixels (H, W, 3) uint8 RGB, or (H, W) uint8 for gray photographs.
    """
    wanted = list(EXAMPLE_IMAGE_SOURCES) if names is None else list(names)
    out: list[tuple[str, np.ndarray]] = []
    for name in wanted:
        if name == "astronaut":
            import skimage.data

            out.append((name, skimage.data.astronaut()))
        elif name == "camera":
            import skimage.data

            out.append((name, skimage.data.camera()))
        elif name == "grace_hopper":
            from matplotlib import cbook

            path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
            with Image.open(path) as im:
                out.append((name, np.asarray(im.convert("RGB"))))
        else:
            raise KeyError(f"example_images: unknown {name!r}; expected some of {list(EXAMPLE_IMAGE_SOURCES)}")
    return out


IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def load_images(
    folder: str | Path,
    *,
    recursive: bool = False,
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
    limit: int | None = None,
    mode: str = "RGB",
) -> list[tuple[str, Image.Image]]:
    """Your own photographs from a folder, as ``(relative path, PIL image)`` sorted by path.

    Raises:
        FileNotFoundError: the folder is missing or holds no image with one of ``suffixes``.
        CorruptImageError: naming a file that cannot be decoded.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: not a folder.\n  what to do: pass the folder that holds your .jpg/.png photographs."
        )
    pattern = "**/*" if recursive else "*"
    ok = {s.lower() for s in suffixes}
    paths = sorted(p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in ok)
    if not paths:
        raise FileNotFoundError(
            f"{root}: no image with suffix {sorted(ok)}{' (searched recursively)' if recursive else ''}.\n"
            f"  what to do: put photographs there{'' if recursive else ' or pass recursive=True'}."
        )
    return [(p.relative_to(root).as_posix(), read_image(p, mode)) for p in paths[:limit]]
