"""Class orders and label mappings of :mod:`fernb.labels` against the published tables.

The reference tables are hard-coded below from ``shared/specs/baselines.md`` §1.1 (and ``arbex.md`` §6.1 for
Aff-Wild2); :func:`test_hard_coded_tables_match_the_spec_text` re-reads them from the spec files where those exist.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fernb.labels import (
    CANONICAL,
    DATASET_ORDERS,
    JAFFE_CODES,
    LABEL_SPACES,
    SYNONYMS,
    LabelSpace,
    UnknownClassError,
    canonical_name,
    canonical_to_dataset,
    dataset_to_canonical,
    get_label_space,
    remap,
)

# -- the spec's tables (baselines.md §1.1) ---------------------------------------------------------------------------
SPEC_ORDERS = {
    "rafdb": ["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"],
    "affectnet": ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"],
    "ferplus": ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF"],
    "fer2013": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
    "rafdb_manet": ["Neutral", "Happiness", "Sadness", "Surprise", "Fear", "Disgust", "Anger"],
}
RAF2AFF = [3, 4, 5, 1, 2, 6, 0]
AFF2RAF = [6, 3, 4, 0, 1, 2, 5]
FERPLUS2AFF = [0, 1, 3, 2, 6, 5, 4, 7]
FER2AFF = [6, 5, 4, 1, 2, 3, 0]
# Ad-Corre's FER2013 folder names (alphabetical) -> AffectNet ids (baselines.md §1.1, FER2013 Kaggle row).
ADCORRE_FOLDERS = {"angry": 6, "disgust": 5, "fear": 4, "happy": 1, "neutral": 0, "sad": 2, "surprise": 3}
# arbex.md §6.1: ABAW EXPR codes.
AFFWILD2_ORDER = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"]
# CK+ release README (Emotion/*_emotion.txt codes); not in the specs.
CKPLUS_ORDER = ["neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"]
JAFFE_REFERENCE = {
    "NE": "neutral",
    "HA": "happy",
    "SA": "sad",
    "SU": "surprise",
    "FE": "fear",
    "DI": "disgust",
    "AN": "angry",
}


def test_canonical_order_is_affectnet_order_plus_other() -> None:
    assert [canonical_name(n) for n in SPEC_ORDERS["affectnet"]] == list(CANONICAL[:8])
    assert CANONICAL[8] == "other" and len(CANONICAL) == 9


@pytest.mark.parametrize("dataset", ["rafdb", "affectnet", "fer2013", "rafdb_manet"])
def test_dataset_orders_match_spec_names(dataset: str) -> None:
    assert DATASET_ORDERS[dataset] == tuple(canonical_name(n) for n in SPEC_ORDERS[dataset])


def test_ferplus_order_is_the_eight_emotion_vote_columns() -> None:
    from fernb.data.readers.ferplus import VOTE_COLUMNS

    assert DATASET_ORDERS["ferplus"] == tuple(canonical_name(n) for n in SPEC_ORDERS["ferplus"][:8])
    assert list(VOTE_COLUMNS) == SPEC_ORDERS["ferplus"]


@pytest.mark.parametrize(
    "dataset,table",
    [
        ("rafdb", RAF2AFF),
        ("ferplus", FERPLUS2AFF),
        ("fer2013", FER2AFF),
        ("affectnet", list(range(8))),
        ("affectnet7", list(range(7))),
        ("rafdb_manet", list(range(7))),
    ],
)
def test_dataset_to_canonical_equals_spec_mapping_to_affectnet(dataset: str, table: list[int]) -> None:
    got = dataset_to_canonical(dataset, np.arange(len(table)))
    assert got.tolist() == table
    assert [dataset_to_canonical(dataset, k) for k in range(len(table))] == table  # scalar path


def test_aff2raf_is_canonical_to_rafdb() -> None:
    assert canonical_to_dataset("rafdb", np.arange(7)).tolist() == AFF2RAF
    assert [RAF2AFF[AFF2RAF[k]] for k in range(7)] == list(range(7))


def test_adcorre_folder_mapping() -> None:
    assert {n: CANONICAL.index(canonical_name(n)) for n in ADCORRE_FOLDERS} == ADCORRE_FOLDERS


def test_affwild2_ckplus_and_jaffe_orders() -> None:
    assert DATASET_ORDERS["affwild2"] == tuple(canonical_name(n) for n in AFFWILD2_ORDER)
    assert dataset_to_canonical("affwild2", np.arange(8)).tolist() == [0, 6, 5, 4, 1, 2, 3, 8]
    assert DATASET_ORDERS["ckplus"] == tuple(canonical_name(n) for n in CKPLUS_ORDER)
    assert dataset_to_canonical("ckplus", np.arange(8)).tolist() == [0, 6, 7, 5, 4, 1, 2, 3]
    assert JAFFE_CODES == JAFFE_REFERENCE


@pytest.mark.parametrize("dataset", sorted(DATASET_ORDERS))
def test_round_trip_dataset_canonical_dataset(dataset: str) -> None:
    codes = np.arange(len(DATASET_ORDERS[dataset]))
    canon = dataset_to_canonical(dataset, codes)
    assert len(set(canon.tolist())) == len(codes)  # injective
    np.testing.assert_array_equal(canonical_to_dataset(dataset, canon), codes)
    names = [CANONICAL[c] for c in canon]
    assert tuple(names) == DATASET_ORDERS[dataset]


@pytest.mark.parametrize(
    "dataset,code",
    [("rafdb", 7), ("rafdb", -1), ("fer2013", 7), ("ferplus", 8), ("affectnet", 8), ("affwild2", 8), ("ckplus", 8)],
)
def test_out_of_range_codes_raise(dataset: str, code: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        dataset_to_canonical(dataset, code)
    with pytest.raises(ValueError, match="out of range"):
        dataset_to_canonical(dataset, [0, code])


@pytest.mark.parametrize(
    "dataset,missing",
    [
        ("rafdb", "contempt"),
        ("fer2013", "contempt"),
        ("affectnet", "other"),
        ("affwild2", "contempt"),
        ("ckplus", "other"),
    ],
)
def test_classes_missing_in_a_dataset_raise(dataset: str, missing: str) -> None:
    with pytest.raises(ValueError, match=f"has no class {missing}"):
        canonical_to_dataset(dataset, CANONICAL.index(missing))


def test_canonical_index_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="out of range"):
        canonical_to_dataset("rafdb", 9)


def test_unknown_names_and_datasets_raise_with_the_accepted_names() -> None:
    with pytest.raises(UnknownClassError, match="expected one of neutral, happy"):
        canonical_name("joyful")
    with pytest.raises(UnknownClassError, match="no published class order"):
        dataset_to_canonical("sfew", 0)
    assert "joyful" in str(UnknownClassError("unknown expression class 'joyful'"))


@pytest.mark.parametrize(
    "spelling,name",
    [
        ("Happiness", "happy"),
        ("ANGER", "angry"),
        (" sadness ", "sad"),
        ("Surprised", "surprise"),
        ("NE", "neutral"),
        ("Others", "other"),
        ("contempt", "contempt"),
        ("fearful", "fear"),
        ("Disgusted", "disgust"),
    ],
)
def test_synonyms_are_case_and_space_insensitive(spelling: str, name: str) -> None:
    assert canonical_name(spelling) == name


def test_every_synonym_maps_to_a_canonical_class() -> None:
    assert set(SYNONYMS.values()) == set(CANONICAL)
    assert all(canonical_name(c) == c for c in CANONICAL)


# -- label spaces ----------------------------------------------------------------------------------------------------
def test_standard_label_spaces() -> None:
    assert LABEL_SPACES["basic7"].names == CANONICAL[:7] and LABEL_SPACES["basic7"].is_canonical_prefix
    assert LABEL_SPACES["ferplus8"].names == CANONICAL[:8] == LABEL_SPACES["affectnet8"].names
    ck = LABEL_SPACES["ckplus7"]
    assert "neutral" not in ck and "contempt" in ck and not ck.is_canonical_prefix
    aw = LABEL_SPACES["affwild2"]
    assert aw.names[-1] == "other" and "contempt" not in aw and len(aw) == 8
    assert aw.to_canonical.tolist() == [0, 1, 2, 3, 4, 5, 6, 8]
    assert LABEL_SPACES["basic6"].names == CANONICAL[1:7]


def test_label_space_index_contains_and_validation() -> None:
    space = LABEL_SPACES["ckplus7"]
    assert space.index("Anger") == space.names.index("angry") and space.num_classes == len(space) == 7
    assert "happiness" in space and "neutral" not in space and "joyful" not in space
    with pytest.raises(UnknownClassError, match="not in label space"):
        space.index("neutral")
    with pytest.raises(ValueError, match="canonical order"):
        LabelSpace("bad", ("sad", "happy"))
    with pytest.raises(UnknownClassError):
        LabelSpace("bad", ("happiness",))


def test_get_label_space_by_name_instance_and_list() -> None:
    assert get_label_space("basic7") is LABEL_SPACES["basic7"]
    assert get_label_space(LABEL_SPACES["ckplus7"]) is LABEL_SPACES["ckplus7"]
    custom = get_label_space(["Anger", "happiness", "neutral"])
    assert custom.names == ("neutral", "happy", "angry")
    with pytest.raises(UnknownClassError, match="unknown label space"):
        get_label_space("basic9")


def test_map_from_and_remap() -> None:
    basic7, ck, fp8 = LABEL_SPACES["basic7"], LABEL_SPACES["ckplus7"], LABEL_SPACES["ferplus8"]
    table = ck.map_from(basic7)
    assert table[0] == -1  # neutral has no CK+48 class
    assert [ck.names[t] for t in table[1:]] == list(basic7.names[1:])
    assert remap(np.arange(8), "ferplus8", "basic7").tolist() == [0, 1, 2, 3, 4, 5, 6, -1]
    labels = np.array([6, 0, 2, 5])
    assert remap(remap(labels, basic7, fp8), fp8, basic7).tolist() == labels.tolist()
    aw = remap(np.arange(8), "affwild2", "ferplus8")
    assert aw.tolist() == [0, 1, 2, 3, 4, 5, 6, -1]  # 'other' has no FER+ class
    assert remap([ck.index("contempt")], ck, "affwild2").tolist() == [-1]


# -- the spec text itself --------------------------------------------------------------------------------------------
def _spec_list(text: str, marker: str) -> list[int]:
    line = next(ln for ln in text.splitlines() if marker in ln)
    return [int(v) for v in re.search(r"\[([\d,\s]+)\]", line.split(marker, 1)[1]).group(1).split(",")]


def _table_order(text: str, row_title: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith("|") and row_title in ln)
    cell = line.split("|")[2].split("(")[0]  # drop remarks such as "(8 None, 9 Uncertain, ...)"
    pairs = re.findall(r"(\d+) ([A-Za-z]+)", cell)
    if pairs:
        assert [int(i) for i, _ in pairs] == list(range(len(pairs)))
        return [name for _, name in pairs]
    return [c.strip() for c in cell.split(",")]


@pytest.mark.shared
def test_hard_coded_tables_match_the_spec_text(specs_dir: Path) -> None:
    text = (specs_dir / "baselines.md").read_text(encoding="utf-8")
    assert _spec_list(text, "raf2aff =") == RAF2AFF
    assert _spec_list(text, "aff2raf =") == AFF2RAF
    assert _spec_list(text, "FER+ vote column k -> AffectNet:") == FERPLUS2AFF
    assert _spec_list(text, "FER2013 Kaggle -> AffectNet:") == FER2AFF
    assert _table_order(text, "**RAF-DB file order**") == SPEC_ORDERS["rafdb"]
    assert _table_order(text, "**AffectNet order**") == SPEC_ORDERS["affectnet"]
    assert _table_order(text, "**FER+ `label.csv` vote columns**") == SPEC_ORDERS["ferplus"]
    assert _table_order(text, "**FER2013 Kaggle**") == SPEC_ORDERS["fer2013"]
    assert _table_order(text, "**MA-Net RAF-DB folders**") == SPEC_ORDERS["rafdb_manet"]
    adcorre = re.search(r"maps folders `([a-z, ]+)` -> AffectNet ids `([\d,]+)`", text)
    assert (
        dict(zip(adcorre.group(1).split(", "), map(int, adcorre.group(2).split(",")), strict=True)) == ADCORRE_FOLDERS
    )
    arbex = (specs_dir / "arbex.md").read_text(encoding="utf-8")
    line = next(ln for ln in arbex.splitlines() if "Class order: 0 Neutral" in ln)
    assert [n for _, n in re.findall(r"(\d) \**([A-Za-z]+)", line)] == AFFWILD2_ORDER
