"""Accuracies the papers and official repositories report, with where each number comes from.

Shown beside fernb's own numbers in ``04_compare``. They are *not* comparable one to one: the papers train at
224 px from ImageNet / MS-Celeb / face-landmark pretraining for 50-300 epochs on GPUs, several select the best epoch
on the test set (see ``shared/specs/baselines.md`` §1.3), and some numbers exist only as checkpoint file names.
Values are top-1 accuracy in percent on the dataset's usual test split.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Reported", "REPORTED", "reported"]


@dataclass(frozen=True)
class Reported:
    method: str
    dataset: str
    accuracy: float
    source: str


REPORTED: tuple[Reported, ...] = (
    Reported("arbex", "rafdb", 92.47, "ARBEx paper / README badge (same number also attributed to GReFEL)"),
    Reported("arbex", "ferplus", 93.09, "ARBEx paper / README badge"),
    Reported("arbex", "jaffe", 96.67, "benchmark listing for ARBEx"),
    Reported("arbex", "affwild2", 72.48, "ARBEx paper (accuracy on the ABAW validation set)"),
    Reported("poster_v2", "rafdb", 92.21, "POSTER_V2 README"),
    Reported("poster_v2", "affectnet7", 67.49, "POSTER_V2 README"),
    Reported("poster_v2", "affectnet8", 63.77, "POSTER_V2 README"),
    Reported("arm", "rafdb", 90.42, "ARM README, final version (92.05 in arXiv v2 came with test batch 64)"),
    Reported("arm", "affectnet7", 65.2, "ARM arXiv v2 abstract"),
    Reported("arm", "fer2013", 71.38, "ARM arXiv v1 abstract"),
    Reported("adcorre", "affectnet7", 63.36, "Ad-Corre released checkpoint name AffectNet_6336.h5"),
    Reported("adcorre", "rafdb", 86.96, "Ad-Corre released checkpoint name RafDB_8696.h5"),
    Reported("adcorre", "fer2013", 72.03, "Ad-Corre released checkpoint name Fer2013_7203.h5"),
    Reported("esr", "affectnet8", 59.3, "ESR-9 (AAAI-20), as quoted by the diversified-features paper"),
    Reported("esr", "ferplus", 87.15, "ESR-9 (AAAI-20), as quoted by the diversified-features paper"),
    Reported("manet", "rafdb", 88.40, "MA-Net, as quoted by the diversified-features paper"),
    Reported("manet", "affectnet8", 60.29, "MA-Net, as quoted by the diversified-features paper"),
    Reported("diversified", "rafdb", 89.99, "Heidari & Iosifidis abstract"),
    Reported("diversified", "ferplus", 89.34, "Heidari & Iosifidis abstract"),
    Reported("diversified", "affectnet8", 60.02, "Heidari & Iosifidis abstract"),
)


def reported(dataset: str) -> dict[str, Reported]:
    """Reported results on ``dataset`` by method name (``"affectnet"`` matches both AffectNet variants' 8 classes)."""
    key = {"affectnet": "affectnet8"}.get(dataset, dataset)
    return {r.method: r for r in REPORTED if r.dataset == key}
