"""Dataset readers: the real FER+ / CK+48 copies in ../shared, and tiny fake trees of every published layout."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import (
    JAFFE_FILES,
    fer_pixels,
    make_affectnet_csv,
    make_affwild2,
    make_ckplus_original,
    make_class_tree,
    make_fer2013_csv,
    make_ferplus_microsoft,
    make_ferplus_new_csv,
    make_ferplus_shared,
    make_jaffe,
    make_manifest,
    make_rafdb,
    write_image,
)

from fernb.data import DataRootError, EmptySplitError, FERDataset, load_dataset
from fernb.data.readers import verify_images
from fernb.data.readers.ferplus import ferplus_targets
from fernb.data.splits import (
    folds_from_column,
    group_holdout,
    stratified_split,
    subject_kfold,
    train_valid_split,
)
from fernb.labels import CANONICAL

FERPLUS_VALID = {
    "neutral": 1180,
    "happy": 862,
    "surprise": 411,
    "sad": 348,
    "angry": 289,
    "fear": 60,
    "disgust": 25,
    "contempt": 16,
}
FERPLUS_TRAIN = {
    "angry": 2098,
    "fear": 536,
    "contempt": 120,
    "disgust": 116,
    "neutral": 2200,
    "happy": 2200,
    "sad": 2200,
    "surprise": 2200,
}
# README: class totals of the whole FER2013Train split under the majority rule (before the train subset was drawn).
FERPLUS_TRAIN_FULL = {
    "neutral": 8733,
    "happy": 7284,
    "sad": 3022,
    "surprise": 3136,
    "angry": 2098,
    "fear": 536,
    "contempt": 120,
    "disgust": 116,
}
CKPLUS_COUNTS = {"angry": 135, "contempt": 54, "disgust": 177, "fear": 75, "happy": 207, "sad": 84, "surprise": 249}
# FER+ vote column -> folder name of the shared copy (README: happiness->happy, sadness->sad, anger->angry).
FERPLUS_FOLDER = ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear", "contempt")


def _majority_by_hand(votes: list[int]) -> str | None:
    """The FER+ majority rule of ../shared/data/ferplus/README.md, written out plainly as the test's reference."""
    kept = [v if v > 1 else 0 for v in votes]
    best = max(range(10), key=lambda k: kept[k])
    if kept[best] * 2 > sum(kept) and best < 8:
        return FERPLUS_FOLDER[best]
    return None


def _read_label_file(path: Path) -> dict[str, list[int]]:
    with open(path, newline="") as fh:
        return {row[0]: [int(v) for v in row[2:]] for row in csv.reader(fh)}


# -- FER+ (shared copy) ----------------------------------------------------------------------------------------------
@pytest.mark.shared
@pytest.mark.parametrize("split,expected", [("valid", FERPLUS_VALID), ("train", FERPLUS_TRAIN)])
def test_ferplus_shared_counts_match_readme(ferplus_root: Path, split: str, expected: dict[str, int]) -> None:
    ds = load_dataset("ferplus", ferplus_root, split)
    assert ds.class_counts() == expected
    assert ds.label_space.name == "ferplus8"
    assert ds.pixels is None and len(ds.paths) == sum(expected.values())


@pytest.mark.shared
@pytest.mark.parametrize("split", ["train", "valid"])
def test_ferplus_majority_rule_from_label_files_agrees_with_folders(ferplus_root: Path, split: str) -> None:
    labels = _read_label_file(ferplus_root / "labels" / f"FER2013{split.capitalize()}_label.csv")
    with open(ferplus_root / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    for r in rows:
        assert _majority_by_hand(labels[r["ferplus_name"]]) == r["label"] == Path(r["path"]).parent.name, r
    # The valid folders hold the whole PublicTest split: every image with a majority label is there.
    if split == "valid":
        assert sum(_majority_by_hand(v) is not None for v in labels.values()) == len(rows) == 3191


@pytest.mark.shared
def test_ferplus_targets_reproduce_readme_totals_on_full_train_label_file(ferplus_root: Path) -> None:
    labels = _read_label_file(ferplus_root / "labels" / "FER2013Train_label.csv")
    keep, codes, _ = ferplus_targets(np.array(list(labels.values())), "majority")
    counts = Counter(FERPLUS_FOLDER[c] for c in codes[keep])
    assert dict(counts) == FERPLUS_TRAIN_FULL
    by_hand = [_majority_by_hand(v) for v in labels.values()]
    assert [FERPLUS_FOLDER[c] if k else None for k, c in zip(keep, codes, strict=True)] == by_hand


@pytest.mark.shared
def test_ferplus_shared_dists_are_vote_distributions(ferplus_root: Path) -> None:
    ds = load_dataset("ferplus", ferplus_root, "valid")
    np.testing.assert_allclose(ds.dists.sum(1), 1.0, atol=1e-6)
    votes = ds.meta["votes"]
    assert votes.shape == (len(ds), 10)
    # canonical column j holds FER+ vote column VOTE_TO_CANON^-1(j), normalised over the 8 emotions
    fer_to_canon = [0, 1, 3, 2, 6, 5, 4, 7]
    expect = np.zeros((len(ds), 8))
    expect[:, fer_to_canon] = votes[:, :8] / votes[:, :8].sum(1, keepdims=True)
    np.testing.assert_allclose(ds.dists, expect, atol=1e-6)
    # under the majority rule the crowd's top emotion is the label
    np.testing.assert_array_equal(ds.dists.argmax(1), ds.targets)


@pytest.mark.shared
def test_ferplus_shared_probability_and_soft_modes(ferplus_root: Path) -> None:
    major = load_dataset("ferplus", ferplus_root, "valid")
    soft = load_dataset("ferplus", ferplus_root, "valid", mode="soft")
    prob = load_dataset("ferplus", ferplus_root, "valid", mode="probability")
    # Every image here has a majority, hence emotion votes (soft keeps all) and a PLD target led by the same class.
    assert len(soft) == len(prob) == len(major) == 3191
    np.testing.assert_array_equal(prob.targets, major.targets)
    np.testing.assert_allclose(prob.dists.sum(1), 1.0, atol=1e-6)
    np.testing.assert_allclose(soft.dists, major.dists)
    # PLD drops single votes: no probability mass where a class got <= 1 vote
    fer_to_canon = [0, 1, 3, 2, 6, 5, 4, 7]
    votes_canon = np.zeros((len(prob), 8))
    votes_canon[:, fer_to_canon] = prob.meta["votes"][:, :8]
    assert not (prob.dists[votes_canon <= 1] > 0).any()


@pytest.mark.shared
def test_ferplus_shared_items_load_lazily(ferplus_root: Path) -> None:
    ds = load_dataset("ferplus", ferplus_root, "valid", transform=None)
    for i in (0, len(ds) // 2, len(ds) - 1):
        item = ds[i]
        assert item["image"].size == (48, 48) and item["label"] == ds.targets[i]
        assert torch.isclose(item["dist"].sum(), torch.tensor(1.0))
    assert verify_images(ds, max_n=3) == []


@pytest.mark.shared
def test_ferplus_shared_has_no_test_split(ferplus_root: Path) -> None:
    with pytest.raises(DataRootError, match="no 'test' rows"):
        load_dataset("ferplus", ferplus_root, "test")


# -- CK+48 (shared copy) ---------------------------------------------------------------------------------------------
@pytest.mark.shared
def test_ckplus48_counts_and_subjects(ckplus_root: Path) -> None:
    ds = load_dataset("ckplus", ckplus_root, "all")
    assert ds.class_counts() == CKPLUS_COUNTS
    assert ds.label_space.name == "ckplus7"
    assert len(set(ds.subjects)) == 118
    # subjects from the manifest agree with the file names
    assert all(p.name.startswith(s + "_") for p, s in zip(ds.paths, ds.subjects, strict=True))
    assert len(set(ds.meta["sequence"])) == 327
    assert ds[0]["image"].size == (48, 48)


@pytest.mark.shared
def test_ckplus48_own_subject_kfold_is_subject_disjoint(ckplus_root: Path) -> None:
    ds = load_dataset("ckplus", ckplus_root, "all")
    folds = subject_kfold(ds.subjects, 10, seed=0, stratify_labels=ds.targets)
    tests = np.concatenate([t for _, t in folds])
    assert sorted(tests.tolist()) == list(range(len(ds)))
    for train, test in folds:
        assert not set(ds.subjects[train]) & set(ds.subjects[test])
        assert not set(ds.meta["sequence"][train]) & set(ds.meta["sequence"][test])
    sizes = [len(t) for _, t in folds]
    assert max(sizes) - min(sizes) <= 6  # a subject has 3..18 images


@pytest.mark.shared
def test_ckplus48_manifest_fold_column_is_subject_disjoint_and_used(ckplus_root: Path) -> None:
    ds = load_dataset("ckplus", ckplus_root, "all")
    folds = folds_from_column(ds.meta["subject_fold10"])
    assert len(folds) == 10
    for k, (train, test) in enumerate(folds):
        assert not set(ds.subjects[train]) & set(ds.subjects[test])
        assert (ds.meta["subject_fold10"][test] == k).all()
    k = 3
    test_ds = load_dataset("ckplus", ckplus_root, "test", fold=k)
    train_ds = load_dataset("ckplus", ckplus_root, "train", fold=k)
    assert [p.name for p in test_ds.paths] == [ds.paths[i].name for i in folds[k][1]]
    assert len(train_ds) + len(test_ds) == len(ds)
    assert not set(train_ds.subjects) & set(test_ds.subjects)


# -- fake trees: RAF-DB ----------------------------------------------------------------------------------------------
RAF_TRAIN = [1, 2, 3, 4, 5, 6, 7, 4, 4, 7]
RAF_TEST = [7, 1, 4]
RAF_TO_CANON = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}


@pytest.mark.parametrize("basic_prefix", [False, True])
def test_rafdb_list_file_labels_and_aligned_paths(tmp_path: Path, basic_prefix: bool) -> None:
    make_rafdb(tmp_path, RAF_TRAIN, RAF_TEST, basic_prefix=basic_prefix)
    train = load_dataset("rafdb", tmp_path, "train")
    test = load_dataset("rafdb", tmp_path, "test")
    assert [train.class_names[t] for t in train.targets] == [RAF_TO_CANON[c] for c in RAF_TRAIN]
    assert [test.class_names[t] for t in test.targets] == [RAF_TO_CANON[c] for c in RAF_TEST]
    assert train.paths[0].name == "train_00001_aligned.jpg"
    assert train.label_space.name == "basic7" and train.dists is None
    assert train[0]["image"].size == (6, 6)


def test_rafdb_original_images(tmp_path: Path) -> None:
    make_rafdb(tmp_path, RAF_TRAIN, RAF_TEST)
    ds = load_dataset("rafdb", tmp_path, "test", aligned=False)
    assert ds.paths[1].name == "test_00002.jpg" and ds[1]["image"].size == (9, 7)


def test_rafdb_valid_fraction_carves_disjoint_stratified_split(tmp_path: Path) -> None:
    make_rafdb(tmp_path, RAF_TRAIN * 4, RAF_TEST)
    train = load_dataset("rafdb", tmp_path, "train", valid_fraction=0.25, seed=1)
    valid = load_dataset("rafdb", tmp_path, "valid", valid_fraction=0.25, seed=1)
    assert len(train) + len(valid) == 40
    assert not {p.name for p in train.paths} & {p.name for p in valid.paths}
    assert set(np.unique(valid.targets)) == set(np.unique(train.targets))  # every class on both sides
    assert valid.split == "valid"
    with pytest.raises(ValueError, match="valid_fraction"):
        load_dataset("rafdb", tmp_path, "valid")


@pytest.mark.parametrize("folders,order", [(["0", "1", "6"], "manet"), (["1", "4", "7"], "poster")])
def test_rafdb_numeric_class_folders(tmp_path: Path, folders: list[str], order: str) -> None:
    test_dir = "test" if order == "manet" else "valid"
    make_class_tree(tmp_path, {"train": {f: 2 for f in folders}, test_dir: {folders[0]: 1}})
    ds = load_dataset("rafdb", tmp_path, "train")
    expect = {
        "manet": {"0": "neutral", "1": "happy", "6": "angry"},
        "poster": {"1": "surprise", "4": "happy", "7": "neutral"},
    }[order]
    got = {p.parent.name: ds.class_names[t] for p, t in zip(ds.paths, ds.targets, strict=True)}
    assert got == expect
    assert len(load_dataset("rafdb", tmp_path, "test")) == 1


# -- FER2013 ---------------------------------------------------------------------------------------------------------
FER_ROWS = [(0, "Training"), (3, "Training"), (6, "PublicTest"), (1, "Training"), (5, "PrivateTest"), (4, "PublicTest")]
KAGGLE_TO_CANON = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@pytest.mark.parametrize("icml", [False, True])
def test_fer2013_csv_splits_labels_and_pixels(tmp_path: Path, icml: bool) -> None:
    make_fer2013_csv(tmp_path, FER_ROWS, icml=icml)
    for split, usage in (("train", "Training"), ("valid", "PublicTest"), ("test", "PrivateTest")):
        ds = load_dataset("fer2013", tmp_path, split)
        rows = [i for i, (_, u) in enumerate(FER_ROWS) if u == usage]
        assert ds.meta["row"].tolist() == rows
        assert [ds.class_names[t] for t in ds.targets] == [KAGGLE_TO_CANON[FER_ROWS[i][0]] for i in rows]
        assert ds.pixels.shape == (len(rows), 48, 48) and ds.pixels.dtype == np.uint8
        for j, i in enumerate(rows):
            np.testing.assert_array_equal(ds.pixels[j], fer_pixels(i))
        img = ds[0]["image"]
        assert img.size == (48, 48) and img.mode == "RGB"


def test_fer2013_image_release_folders(tmp_path: Path) -> None:
    make_class_tree(tmp_path, {"train": {"angry": 2, "happy": 3}, "test": {"neutral": 1}})
    ds = load_dataset("fer2013", tmp_path, "train")
    assert ds.class_counts()["angry"] == 2 and ds.class_counts()["happy"] == 3
    assert load_dataset("fer2013", tmp_path, "test").class_counts()["neutral"] == 1


# -- FER+ votes -> targets ---------------------------------------------------------------------------------------------
# votes in FER+ column order: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF
VOTE_CASES = {
    "split_4_3_2": [4, 0, 0, 1, 3, 2, 0, 0, 0, 0],
    "clear_neutral": [6, 0, 1, 1, 0, 0, 0, 0, 2, 0],
    "all_unknown": [0, 0, 0, 0, 0, 0, 0, 0, 10, 0],
    "tie_with_unknown": [3, 3, 0, 0, 0, 0, 0, 0, 3, 1],
    "all_single": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    "five_way_tie": [2, 2, 2, 2, 2, 0, 0, 0, 0, 0],
    "surprise_fear": [0, 0, 5, 0, 0, 0, 4, 0, 1, 0],
}
# expected (label column or None, {column: probability}) per mode, worked out by hand from the FERPlus rules
EXPECTED = {
    "majority": {
        "split_4_3_2": None,
        "clear_neutral": 0,
        "all_unknown": None,
        "tie_with_unknown": None,
        "all_single": None,
        "five_way_tie": None,
        "surprise_fear": 2,
    },
    "probability": {
        "split_4_3_2": (0, {0: 4 / 7, 4: 3 / 7}),
        "clear_neutral": (0, {0: 1.0}),
        "all_unknown": None,
        "tie_with_unknown": (0, {0: 0.5, 1: 0.5}),
        "all_single": None,
        "five_way_tie": None,
        "surprise_fear": (2, {2: 5 / 9, 6: 4 / 9}),
    },
    "multi_target": {
        "split_4_3_2": (0, {0: 4 / 7, 4: 3 / 7}),
        "clear_neutral": (0, {0: 1.0}),
        "all_unknown": None,
        "tie_with_unknown": (0, {0: 0.5, 1: 0.5}),
        "all_single": None,
        "five_way_tie": None,
        "surprise_fear": (2, {2: 5 / 9, 6: 4 / 9}),
    },
    "soft": {
        "split_4_3_2": (0, {0: 0.4, 3: 0.1, 4: 0.3, 5: 0.2}),
        "clear_neutral": (0, {0: 0.75, 2: 0.125, 3: 0.125}),
        "all_unknown": None,
        "tie_with_unknown": (0, {0: 0.5, 1: 0.5}),
        "all_single": (0, dict.fromkeys(range(8), 0.125)),
        "five_way_tie": (0, dict.fromkeys(range(5), 0.2)),
        "surprise_fear": (2, {2: 5 / 9, 6: 4 / 9}),
    },
}


@pytest.mark.parametrize("mode", ["majority", "probability", "crossentropy", "multi_target", "soft"])
def test_ferplus_targets_rules_on_hand_worked_votes(mode: str) -> None:
    votes = np.array(list(VOTE_CASES.values()))
    keep, codes, dists = ferplus_targets(votes, mode)
    table = EXPECTED["probability" if mode == "crossentropy" else mode]
    for i, case in enumerate(VOTE_CASES):
        want = table[case]
        if want is None:
            assert not keep[i] and codes[i] == -1, case
            continue
        assert keep[i], case
        if mode == "majority":
            assert codes[i] == want, case
            continue
        label, dist = want
        assert codes[i] == label, case
        expect = np.zeros(8)
        for k, p in dist.items():
            expect[k] = p
        np.testing.assert_allclose(dists[i], expect, atol=1e-6, err_msg=case)


def test_ferplus_unknown_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown FER\\+ mode"):
        ferplus_targets(np.zeros((1, 10)), "vote")


# -- FER+ layouts ------------------------------------------------------------------------------------------------------
FERPLUS_SPLIT_VOTES = {
    "FER2013Train": [
        VOTE_CASES["clear_neutral"],
        VOTE_CASES["surprise_fear"],
        VOTE_CASES["all_unknown"],
        [0, 8, 0, 0, 0, 0, 0, 2, 0, 0],
    ],
    "FER2013Valid": [[0, 0, 0, 0, 9, 1, 0, 0, 0, 0], VOTE_CASES["split_4_3_2"]],
    "FER2013Test": [[0, 0, 0, 0, 0, 0, 0, 7, 3, 0]],
}


def _check_ferplus_fake(ds: FERDataset, split: str) -> None:
    if split == "train":  # neutral, surprise, (unknown dropped), happy
        assert [ds.class_names[t] for t in ds.targets] == ["neutral", "surprise", "happy"]
        np.testing.assert_allclose(ds.dists[1], [0, 0, 0, 5 / 9, 4 / 9, 0, 0, 0], atol=1e-6)  # canonical order
        assert ds.meta["votes"].shape == (3, 10)
    elif split == "valid":  # angry; the 4/3/2 split has no majority
        assert [ds.class_names[t] for t in ds.targets] == ["angry"]
    else:
        assert [ds.class_names[t] for t in ds.targets] == ["contempt"]
    np.testing.assert_allclose(ds.dists.sum(1), 1.0, atol=1e-6)
    assert ds[0]["image"].size == (48, 48)


@pytest.mark.parametrize("esr,with_box", [(False, True), (True, True), (False, False)])
@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_ferplus_microsoft_layout(tmp_path: Path, esr: bool, with_box: bool, split: str) -> None:
    make_ferplus_microsoft(tmp_path, FERPLUS_SPLIT_VOTES, esr=esr, with_box=with_box)
    _check_ferplus_fake(load_dataset("ferplus", tmp_path, split), split)


@pytest.mark.parametrize("split", ["train", "valid", "test"])
def test_ferplus_fer2013new_layout(tmp_path: Path, split: str) -> None:
    usage = {"FER2013Train": "Training", "FER2013Valid": "PublicTest", "FER2013Test": "PrivateTest"}
    rows, i = [], 0
    for folder, votes in FERPLUS_SPLIT_VOTES.items():
        for v in votes:
            rows.append((usage[folder], f"fer{i:07d}.png", v))
            i += 1
    rows.insert(2, ("Training", "", [0] * 10))  # an image FER+ removed: empty name, skipped
    make_ferplus_new_csv(tmp_path, rows)
    ds = load_dataset("ferplus", tmp_path, split)
    _check_ferplus_fake(ds, split)
    assert ds.pixels is not None
    first_row = next(j for j, r in enumerate(rows) if r[1] == ds.meta["ferplus_name"][0])
    np.testing.assert_array_equal(ds.pixels[0], fer_pixels(first_row))


def test_ferplus_shared_layout_fake_and_modes(tmp_path: Path) -> None:
    make_ferplus_shared(
        tmp_path,
        [
            ("train", "neutral", VOTE_CASES["clear_neutral"]),
            ("train", "surprise", VOTE_CASES["surprise_fear"]),
            ("train", "happy", [0, 8, 0, 0, 0, 0, 0, 2, 0, 0]),
            ("valid", "angry", [0, 0, 0, 0, 9, 1, 0, 0, 0, 0]),
        ],
    )
    _check_ferplus_fake(load_dataset("ferplus", tmp_path, "train"), "train")
    soft = load_dataset("ferplus", tmp_path, "train", mode="soft")
    np.testing.assert_allclose(soft.dists[0], [0.75, 0, 0.125, 0.125, 0, 0, 0, 0])  # canonical: sad 2, surprise 3
    assert load_dataset("ferplus", tmp_path, "valid").class_counts()["angry"] == 1


def test_ferplus_label_space_restriction(tmp_path: Path) -> None:
    make_ferplus_microsoft(tmp_path, FERPLUS_SPLIT_VOTES)
    ds = load_dataset("ferplus", tmp_path, "train", label_space="basic7")
    assert ds.label_space.name == "basic7" and len(ds) == 3
    with pytest.raises(EmptySplitError, match="empty"):
        load_dataset("ferplus", tmp_path, "test", label_space="basic7")  # only contempt there


# -- AffectNet -------------------------------------------------------------------------------------------------------
AFF_TRAIN = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 1, 0, 0, 6, 6, 3, 3, 2]
AFF_VALID = [7, 0, 10, 1]


def test_affectnet_csv_labels_meta_and_dropped_codes(tmp_path: Path) -> None:
    make_affectnet_csv(tmp_path, AFF_TRAIN, AFF_VALID)
    train = load_dataset("affectnet", tmp_path, "train")
    kept = [c for c in AFF_TRAIN if c < 8]
    assert train.targets.tolist() == kept  # affectnet8 is the canonical prefix: codes are canonical indices
    assert train.label_space.name == "affectnet8"
    assert train.meta["valence"].shape == (len(kept),) and train.meta["box"].shape == (len(kept), 4)
    test = load_dataset("affectnet", tmp_path, "test")
    assert [test.class_names[t] for t in test.targets] == ["contempt", "neutral", "happy"]
    assert test[0]["image"].size == (20, 20)


def test_affectnet_seven_classes_and_face_crop(tmp_path: Path) -> None:
    make_affectnet_csv(tmp_path, AFF_TRAIN, AFF_VALID)
    ds = load_dataset("affectnet", tmp_path, "test", num_classes=7, crop_face=True)
    assert ds.label_space.name == "basic7" and ds.targets.tolist() == [0, 1]
    assert ds[0]["image"].size == (10, 12)  # the CSV face box is (2, 3, 10, 12)
    assert ds.subset([1])[0]["image"].size == (10, 12)


def test_affectnet_valid_fraction(tmp_path: Path) -> None:
    make_affectnet_csv(tmp_path, AFF_TRAIN, AFF_VALID)
    train = load_dataset("affectnet", tmp_path, "train", valid_fraction=0.3, seed=0)
    valid = load_dataset("affectnet", tmp_path, "valid", valid_fraction=0.3, seed=0)
    assert len(train) + len(valid) == 17 and len(valid) > 0
    assert not {str(p) for p in train.paths} & {str(p) for p in valid.paths}


def test_affectnet_class_folders(tmp_path: Path) -> None:
    make_class_tree(tmp_path, {"train": {"0": 2, "7": 1, "happy": 1}, "val": {"6": 2}})
    ds = load_dataset("affectnet", tmp_path, "train")
    assert ds.class_counts()["neutral"] == 2 and ds.class_counts()["contempt"] == 1 and ds.class_counts()["happy"] == 1
    assert load_dataset("affectnet", tmp_path, "test").class_counts()["angry"] == 2
    assert len(load_dataset("affectnet", tmp_path, "train", num_classes=7)) == 3


# -- JAFFE -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sub", ["", "jaffe"])
def test_jaffe_codes_subjects_and_folds(tmp_path: Path, sub: str) -> None:
    make_jaffe(tmp_path / sub if sub else tmp_path)
    ds = load_dataset("jaffe", tmp_path, "all")
    by_name = {p.name: (ds.class_names[t], s) for p, t, s in zip(ds.paths, ds.targets, ds.subjects, strict=True)}
    assert by_name["KA.AN1.39.tiff"] == ("angry", "KA")
    assert by_name["MK.FE1.134.tiff"] == ("fear", "MK")
    assert by_name["YM.NE3.51.tiff"] == ("neutral", "YM")
    assert len(ds) == len(JAFFE_FILES) and len(set(ds.subjects)) == 5
    test = load_dataset("jaffe", tmp_path, "test", fold=0, num_folds=5)
    train = load_dataset("jaffe", tmp_path, "train", fold=0, num_folds=5)
    assert len(train) + len(test) == len(ds) and len(set(test.subjects)) == 1
    assert not set(train.subjects) & set(test.subjects)
    assert ds[0]["image"].size == (8, 8)


# -- CK+ original release --------------------------------------------------------------------------------------------
CK_SEQS = [("S005", "001", 6, 3), ("S005", "002", 4, 7), ("S010", "001", 5, 2), ("S010", "003", 3, None)]


@pytest.mark.parametrize("include_neutral", [False, True])
def test_ckplus_original_peak_frames(tmp_path: Path, include_neutral: bool) -> None:
    make_ckplus_original(tmp_path, CK_SEQS)
    ds = load_dataset("ckplus", tmp_path, "all", include_neutral=include_neutral)
    peaks = {"S005_001": "disgust", "S005_002": "surprise", "S010_001": "contempt"}
    got: dict[str, list[tuple[int, str]]] = {}
    for t, seq, f in zip(ds.targets, ds.meta["sequence"], ds.meta["frame"], strict=True):
        got.setdefault(str(seq), []).append((int(f), ds.class_names[t]))
    assert set(got) == set(peaks)  # the unlabelled sequence is skipped
    n_frames = {"S005_001": 6, "S005_002": 4, "S010_001": 5}
    for seq, cls in peaks.items():
        want = [(f, cls) for f in range(n_frames[seq] - 2, n_frames[seq] + 1)]
        if include_neutral:
            want = [(1, "neutral"), *want]
        assert sorted(got[seq]) == want
    assert ds.label_space.name == ("ferplus8" if include_neutral else "ckplus7")
    assert set(ds.subjects) == {"S005", "S010"}


def test_ckplus_folder_layout_without_manifest(tmp_path: Path) -> None:
    for cls, name in [
        ("anger", "S010_004_00000017.png"),
        ("anger", "S010_004_00000018.png"),
        ("sadness", "S011_002_00000009.png"),
        ("happy", "S012_001_00000020.png"),
    ]:
        write_image(tmp_path / "all" / cls / name)
    ds = load_dataset("ckplus", tmp_path, "all")
    assert ds.class_counts() == {
        "happy": 1,
        "sad": 1,
        "surprise": 0,
        "fear": 0,
        "disgust": 0,
        "angry": 2,
        "contempt": 0,
    }
    assert sorted(set(ds.subjects)) == ["S010", "S011", "S012"]
    assert sorted(ds.meta["frame"].tolist()) == [9, 17, 18, 20]
    assert set(ds.meta["sequence"]) == {"S010_004", "S011_002", "S012_001"}
    test = load_dataset("ckplus", tmp_path, "test", fold=1, num_folds=3)
    assert len(set(test.subjects)) == 1


# -- Aff-Wild2 -------------------------------------------------------------------------------------------------------
AW_VIDEOS = {
    "Train_Set": {"video1": [0, 0, -1, 4, 7, 7], "10-60-1280x720_left": [6, 5, 3, 2], "10-60-1280x720_right": [1, -1]},
    "Validation_Set": {"video9": [4, 4, 4]},
}
AW_TO_CANON = ("neutral", "angry", "disgust", "fear", "happy", "sad", "surprise", "other")


def test_affwild2_frames_labels_subjects(tmp_path: Path) -> None:
    make_affwild2(tmp_path, AW_VIDEOS, missing={"video1": [2]})
    ds = load_dataset("affwild2", tmp_path, "train")
    got = {
        (str(v), int(f)): ds.class_names[t]
        for v, f, t in zip(ds.meta["video"], ds.meta["frame"], ds.targets, strict=True)
    }
    want = {}
    for video, codes in AW_VIDEOS["Train_Set"].items():
        for f, c in enumerate(codes, start=1):
            if c >= 0 and not (video == "video1" and f == 2):
                want[(video, f)] = AW_TO_CANON[c]
    assert got == want
    assert ds.label_space.name == "affwild2" and "other" in ds.class_names
    assert set(ds.subjects) == {"video1", "10-60-1280x720"}
    i = next(j for j, (v, f) in enumerate(zip(ds.meta["video"], ds.meta["frame"], strict=True)) if f == 4)
    assert ds.paths[i].name == "00004.jpg" and ds[i]["image"].size == (6, 6)
    assert len(load_dataset("affwild2", tmp_path, "valid")) == 3


def test_affwild2_frame_stride(tmp_path: Path) -> None:
    make_affwild2(tmp_path, {"Train_Set": {"v": [0] * 10}})
    ds = load_dataset("affwild2", tmp_path, "train", frame_stride=3)
    assert ds.meta["frame"].tolist() == [1, 4, 7, 10]


# -- generic folder and manifest -------------------------------------------------------------------------------------
def test_folder_reader_splits_and_label_space(tmp_path: Path) -> None:
    make_class_tree(tmp_path, {"train": {"happiness": 2, "Anger": 1, "neutral": 1}, "test": {"sad": 2}})
    ds = load_dataset("folder", tmp_path, "train")
    assert ds.class_counts()["happy"] == 2 and ds.class_counts()["angry"] == 1
    assert ds.label_space.name == "basic7"
    assert len(load_dataset("folder", tmp_path, "all")) == 6
    assert load_dataset("folder", tmp_path, "test")[0]["image"].mode == "RGB"


def test_folder_reader_numeric_folders_need_an_order(tmp_path: Path) -> None:
    make_class_tree(tmp_path, {"": {"0": 1, "3": 2}})
    ds = load_dataset("folder", tmp_path, "all", class_order="fer2013")
    assert ds.class_counts()["angry"] == 1 and ds.class_counts()["happy"] == 2
    from fernb.labels import UnknownClassError

    with pytest.raises(UnknownClassError, match="class_order"):
        load_dataset("folder", tmp_path, "all")


def test_manifest_reader_labels_subjects_dists_meta(tmp_path: Path) -> None:
    header = ["path", "label", "subject", "split", "dist_happy", "dist_sad", "dist_contempt", "age"]
    rows = [
        ["img/a.png", "happy", "p1", "train", 3, 1, 0, 30],
        ["img/b.png", "2", "p2", "train", 0, 0, 0, 41],  # canonical index 2 = sad; empty distribution -> one-hot
        ["img/c.png", "contempt", "p3", "test", 0, 1, 1, 25],
    ]
    make_manifest(tmp_path, header, rows)
    ds = load_dataset("manifest", tmp_path, "train")
    # the smallest standard space holding the labels and the soft columns (contempt, no neutral): CK+'s 7 classes
    assert ds.label_space.name == "ckplus7"
    assert [ds.class_names[t] for t in ds.targets] == ["happy", "sad"]
    cols = [ds.label_space.index(c) for c in ("happy", "sad", "contempt")]
    np.testing.assert_allclose(ds.dists[0][cols], [0.75, 0.25, 0.0])
    np.testing.assert_allclose(ds.dists[1], np.eye(7)[ds.label_space.index("sad")])
    assert ds.subjects.tolist() == ["p1", "p2"] and ds.meta["age"].tolist() == [30, 41]
    assert len(load_dataset("manifest", tmp_path, "all")) == 3
    assert ds[1]["image"].size == (6, 6)


@pytest.mark.shared
def test_manifest_reader_on_ferplus_manifest(ferplus_root: Path) -> None:
    ds = load_dataset("manifest", ferplus_root, "valid")
    assert ds.class_counts() == FERPLUS_VALID
    ref = load_dataset("ferplus", ferplus_root, "valid")
    np.testing.assert_allclose(ds.dists, ref.dists, atol=1e-6)


# -- splits ----------------------------------------------------------------------------------------------------------
def test_subject_kfold_partitions_and_balances() -> None:
    rng = np.random.default_rng(0)
    subjects = np.repeat([f"s{i}" for i in range(23)], rng.integers(1, 6, 23))
    labels = rng.integers(0, 3, len(subjects))
    folds = subject_kfold(subjects, 5, seed=0, stratify_labels=labels)
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(len(subjects)))
    for train, test in folds:
        assert not set(subjects[train]) & set(subjects[test])
        assert len(train) + len(test) == len(subjects)
    sizes = [len(t) for _, t in folds]
    assert max(sizes) - min(sizes) <= 5
    again = subject_kfold(subjects, 5, seed=0, stratify_labels=labels)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again, strict=True))
    with pytest.raises(ValueError, match="subjects cannot fill"):
        subject_kfold(subjects[:3], 5)


def test_stratified_split_keeps_class_shares() -> None:
    y = np.repeat([0, 1, 2], [50, 30, 20])
    kept, held = stratified_split(y, 0.2, seed=3)
    assert np.bincount(y[held]).tolist() == [10, 6, 4]
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(100))


def test_group_holdout_and_train_valid_split_are_subject_disjoint(tmp_path: Path) -> None:
    subjects = np.repeat([f"s{i}" for i in range(20)], 5)
    kept, held = group_holdout(subjects, 0.2, seed=0)
    assert not set(subjects[kept]) & set(subjects[held])
    assert 10 <= len(held) <= 30
    make_jaffe(tmp_path)
    ds = load_dataset("jaffe", tmp_path, "all")
    train, valid = train_valid_split(ds, 0.3, seed=0)
    assert not set(train.subjects) & set(valid.subjects) and len(train) + len(valid) == len(ds)
    assert (train.split, valid.split) == ("train", "valid")


def test_every_reader_is_registered() -> None:
    from fernb.data import list_datasets

    assert {"rafdb", "fer2013", "ferplus", "affectnet", "jaffe", "ckplus", "affwild2", "folder", "manifest"} <= set(
        list_datasets()
    )
    assert CANONICAL[:8] == ("neutral", "happy", "sad", "surprise", "fear", "disgust", "angry", "contempt")
