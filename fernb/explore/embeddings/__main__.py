"""``python -m fernb.explore.embeddings``: compile (or load from numba's on-disk cache) UMAP's kernels ahead of
time, e.g. in a CI install step."""

import os

from .projection import warm_numba_cache


def main() -> None:
    print(f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR')}")
    print(f"UMAP kernels ready in {warm_numba_cache():.1f} s")


if __name__ == "__main__":
    main()
