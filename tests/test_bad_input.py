"""Bad data roots, label files and images give errors that name the file (and line), what was expected, what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import (
    make_affectnet_csv,
    make_affwild2,
    make_ckplus_original,
    make_class_tree,
    make_fer2013_csv,
    make_ferplus_microsoft,
    make_ferplus_shared,
    make_jaffe,
    make_manifest,
    make_rafdb,
    write_image,
    write_truncated,
)

from fernb.data import (
    CorruptImageError,
    DataFormatError,
    DataRootError,
    EmptySplitError,
    dataset_info,
    load_dataset,
)
from fernb.data.readers import verify_images
from fernb.labels import UnknownClassError

READERS = {
    "rafdb": "train",
    "fer2013": "train",
    "ferplus": "train",
    "affectnet": "train",
    "jaffe": "all",
    "ckplus": "all",
    "affwild2": "train",
    "folder": "train",
    "manifest": "all",
}


# -- data roots ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(READERS))
def test_missing_root_prints_the_layout(tmp_path: Path, name: str) -> None:
    info = dataset_info(name)
    with pytest.raises(DataRootError) as exc:
        load_dataset(name, tmp_path / "nowhere", READERS[name])
    msg = str(exc.value)
    assert "does not exist" in msg and str(tmp_path / "nowhere") in msg
    assert info.layout.strip().splitlines()[0].strip() in msg and info.env_var in msg


@pytest.mark.parametrize("name", sorted(READERS))
def test_root_without_label_files_prints_the_layout(tmp_path: Path, name: str) -> None:
    (tmp_path / "unrelated.txt").write_text("not a dataset\n")
    with pytest.raises(DataRootError) as exc:
        load_dataset(name, tmp_path, READERS[name])
    msg = str(exc.value)
    assert str(tmp_path) in msg and "expected layout" in msg
    assert dataset_info(name).layout.strip().splitlines()[-1].strip() in msg


def test_no_root_and_no_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FERNB_RAFDB_ROOT", raising=False)
    monkeypatch.delenv("FERNB_DATA_ROOT", raising=False)
    with pytest.raises(DataRootError, match="no data root given"):
        load_dataset("rafdb")


def test_root_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_rafdb(tmp_path, [1, 2], [3])
    monkeypatch.setenv("FERNB_RAFDB_ROOT", str(tmp_path))
    assert len(load_dataset("rafdb", split="test")) == 1


@pytest.mark.parametrize("problem", ["images", "split"])
def test_partial_layouts_name_the_missing_part(tmp_path: Path, problem: str) -> None:
    if problem == "images":
        make_rafdb(tmp_path, [1, 2], [3])
        import shutil

        shutil.rmtree(tmp_path / "Image" / "aligned")
        with pytest.raises(DataRootError, match="aligned"):
            load_dataset("rafdb", tmp_path, "train")
    else:
        make_ferplus_microsoft(tmp_path, {"FER2013Train": [[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]]})
        with pytest.raises(DataRootError, match="FER2013Test/label.csv"):
            load_dataset("ferplus", tmp_path, "test")


def test_unknown_split_name(tmp_path: Path) -> None:
    make_rafdb(tmp_path, [1], [2])
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_dataset("rafdb", tmp_path, "validation")


def test_one_split_datasets_explain_folds(tmp_path: Path) -> None:
    make_jaffe(tmp_path)
    with pytest.raises(ValueError, match="fold="):
        load_dataset("jaffe", tmp_path, "train")
    make_manifest(tmp_path / "ck", ["path", "label", "subject"], [["all/happy/S010_001_00000001.png", "happy", "S010"]])
    with pytest.raises(ValueError, match="fold="):
        load_dataset("ckplus", tmp_path / "ck", "train")


# -- images ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "missing"])
def test_bad_image_is_named_when_accessed(tmp_path: Path, damage: str) -> None:
    make_rafdb(tmp_path, [1, 2, 3], [4])
    bad = tmp_path / "Image" / "aligned" / "train_00002_aligned.jpg"
    if damage == "truncated":
        write_truncated(bad)
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "text":
        bad.write_text("this is not an image")
    else:
        bad.unlink()
    ds = load_dataset("rafdb", tmp_path, "train")  # lazy: loading the list does not open images
    assert ds[0]["image"].size == (6, 6)
    with pytest.raises(CorruptImageError) as exc:
        ds[1]
    assert str(bad) in str(exc.value) and "what to do" in str(exc.value)
    if damage == "missing":
        assert "not on disk" in str(exc.value)
    report = verify_images(ds)
    assert [p for p, _ in report] == [str(bad)]


# -- class names -----------------------------------------------------------------------------------------------------
def test_unknown_class_folder_is_named(tmp_path: Path) -> None:
    make_class_tree(tmp_path, {"train": {"happy": 1, "smiling": 1}})
    with pytest.raises(UnknownClassError) as exc:
        load_dataset("folder", tmp_path, "train")
    assert str(tmp_path / "train" / "smiling") in str(exc.value) and "neutral" in str(exc.value)


def test_unknown_class_folder_in_ckplus(tmp_path: Path) -> None:
    write_image(tmp_path / "all" / "happy" / "S010_001_00000001.png")
    write_image(tmp_path / "all" / "grumpy" / "S011_001_00000001.png")
    with pytest.raises(UnknownClassError, match="grumpy"):
        load_dataset("ckplus", tmp_path, "all")


def test_unknown_class_in_manifest_names_file_and_line(tmp_path: Path) -> None:
    make_manifest(tmp_path, ["path", "label"], [["a.png", "happy"], ["b.png", "smug"]])
    with pytest.raises(UnknownClassError) as exc:
        load_dataset("manifest", tmp_path, "all")
    assert f"{tmp_path / 'manifest.csv'}, line 3" in str(exc.value) and "smug" in str(exc.value)


def test_unknown_jaffe_code_names_the_file(tmp_path: Path) -> None:
    make_jaffe(tmp_path, ["KA.AN1.39.tiff", "KA.XX1.40.tiff"])
    with pytest.raises(UnknownClassError, match="KA.XX1.40.tiff"):
        load_dataset("jaffe", tmp_path, "all")


def test_jaffe_file_with_another_name_pattern(tmp_path: Path) -> None:
    make_jaffe(tmp_path, ["KA.AN1.39.tiff", "photo_01.tiff"])
    with pytest.raises(DataFormatError, match="photo_01.tiff"):
        load_dataset("jaffe", tmp_path, "all")


# -- malformed label files and out-of-range labels -----------------------------------------------------------------
def _rafdb_with_lines(root: Path, lines: list[str]) -> Path:
    make_rafdb(root, [1, 2, 3], [4])
    path = root / "EmoLabel" / "list_patition_label.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    "line,problem",
    [
        ("train_00003.jpg", "cannot parse"),
        ("train_00003.jpg five", "five"),
        ("train_00003.jpg 8", "out of range"),
        ("train_00003.jpg 0", "out of range"),
        ("valid_00003.jpg 2", "neither 'train' nor 'test'"),
    ],
)
def test_rafdb_bad_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = _rafdb_with_lines(tmp_path, ["train_00001.jpg 1", "train_00002.jpg 2", line, "test_00001.jpg 4"])
    with pytest.raises(DataFormatError) as exc:
        load_dataset("rafdb", tmp_path, "train")
    msg = str(exc.value)
    assert f"{path}, line 3" in msg and problem in msg and "expected" in msg
    assert exc.value.line == 3


@pytest.mark.parametrize(
    "emotion,pixels,problem",
    [
        (7, None, "not a label 0..6"),
        ("x", None, "not a label"),
        (0, "1 2 3", "pixels has 3 values"),
        (0, " ".join(["300"] * 2304), "out of range"),
        (0, " ".join(["a"] * 2304), "'a'"),
    ],
)
def test_fer2013_bad_row_names_file_and_line(tmp_path: Path, emotion: object, pixels: str | None, problem: str) -> None:
    path = make_fer2013_csv(tmp_path, [(0, "Training"), (1, "Training"), (2, "Training")])
    lines = path.read_text().splitlines()
    fields = lines[3].split(",")
    fields[0] = str(emotion)
    if pixels is not None:
        fields[1] = pixels
    lines[3] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as exc:
        load_dataset("fer2013", tmp_path, "train")
    assert f"{path}, line 4" in str(exc.value) and problem in str(exc.value)


def test_ferplus_bad_label_row_names_file_and_line(tmp_path: Path) -> None:
    make_ferplus_microsoft(tmp_path, {"FER2013Train": [[10, 0, 0, 0, 0, 0, 0, 0, 0, 0]] * 3})
    path = tmp_path / "data" / "FER2013Train" / "label.csv"
    lines = path.read_text().splitlines()
    lines[1] = "fer0000001.png,3,4,5"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=f"{path}, line 2: row has 4 fields"):
        load_dataset("ferplus", tmp_path, "train")
    lines[1] = 'fer0000001.png,"(0, 0, 48, 48)",a,0,0,0,0,0,0,0,0,0'
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match="line 2: vote counts"):
        load_dataset("ferplus", tmp_path, "train")


@pytest.mark.parametrize("code,problem", [(11, "not a label"), ("happy", "not a label"), (-2, "not a label")])
def test_affectnet_bad_expression_names_file_and_line(tmp_path: Path, code: object, problem: str) -> None:
    make_affectnet_csv(tmp_path, [0, 1, 2], [0])
    path = tmp_path / "training.csv"
    lines = path.read_text().splitlines()
    fields = lines[2].split(",")
    fields[6] = str(code)
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as exc:
        load_dataset("affectnet", tmp_path, "train")
    assert f"{path}, line 3" in str(exc.value) and problem in str(exc.value)


def test_affectnet_missing_columns(tmp_path: Path) -> None:
    make_affectnet_csv(tmp_path, [0, 1], [0])
    (tmp_path / "training.csv").write_text("subDirectory_filePath,expression\n0/a.jpg,1\n")
    with pytest.raises(DataFormatError, match="missing column.*face_x"):
        load_dataset("affectnet", tmp_path, "train")


@pytest.mark.parametrize(
    "content,problem",
    [("9", "out of range"), ("abc", "as a number"), ("2.5", "whole number"), ("1 2", "holds 2 values")],
)
def test_ckplus_bad_emotion_file(tmp_path: Path, content: str, problem: str) -> None:
    make_ckplus_original(tmp_path, [("S005", "001", 4, 3)])
    path = tmp_path / "Emotion" / "S005" / "001" / "S005_001_00000004_emotion.txt"
    path.write_text(content + "\n")
    with pytest.raises(DataFormatError) as exc:
        load_dataset("ckplus", tmp_path, "all")
    assert str(path) in str(exc.value) and problem in str(exc.value)


def test_ckplus_labelled_sequence_without_frames(tmp_path: Path) -> None:
    make_ckplus_original(tmp_path, [("S005", "001", 4, 3)])
    (tmp_path / "Emotion" / "S007" / "002").mkdir(parents=True)
    (tmp_path / "Emotion" / "S007" / "002" / "S007_002_00000010_emotion.txt").write_text("1.0\n")
    with pytest.raises(DataFormatError, match="no frames"):
        load_dataset("ckplus", tmp_path, "all")


@pytest.mark.parametrize(
    "label,line,problem",
    [("9", 4, "not a code -1..7"), ("x", 3, "not a code"), ("HEADER", 1, "not the ABAW EXPR class list")],
)
def test_affwild2_bad_annotation_names_file_and_line(tmp_path: Path, label: str, line: int, problem: str) -> None:
    make_affwild2(tmp_path, {"Train_Set": {"v1": [0, 1, 2, 3]}})
    path = tmp_path / "annotations" / "EXPR_Set" / "Train_Set" / "v1.txt"
    lines = path.read_text().splitlines()
    lines[line - 1] = "Neutral,Happy,Sad,Surprise,Fear,Disgust,Anger,Other" if label == "HEADER" else label
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as exc:
        load_dataset("affwild2", tmp_path, "train")
    assert f"{path}, line {line}" in str(exc.value) and problem in str(exc.value)


@pytest.mark.parametrize("label,problem", [("12", "out of range"), ("-1", "out of range")])
def test_manifest_label_out_of_range(tmp_path: Path, label: str, problem: str) -> None:
    make_manifest(tmp_path, ["path", "label"], [["a.png", "1"], ["b.png", label]])
    with pytest.raises(DataFormatError, match=f"line 3: label {label} is {problem}"):
        load_dataset("manifest", tmp_path, "all")


def test_manifest_negative_soft_label(tmp_path: Path) -> None:
    make_manifest(tmp_path, ["path", "label", "dist_happy", "dist_sad"], [["a.png", "happy", 1, -1]])
    with pytest.raises(DataFormatError, match="line 2.*negative"):
        load_dataset("manifest", tmp_path, "all")


# -- empty splits ----------------------------------------------------------------------------------------------------
def test_empty_split_in_label_file(tmp_path: Path) -> None:
    _rafdb_with_lines(tmp_path, ["train_00001.jpg 1", "train_00002.jpg 2"])
    with pytest.raises(EmptySplitError, match="split 'test' is empty"):
        load_dataset("rafdb", tmp_path, "test")


def test_empty_split_in_fer2013_csv(tmp_path: Path) -> None:
    make_fer2013_csv(tmp_path, [(0, "Training"), (1, "PublicTest")])
    with pytest.raises(EmptySplitError, match="PrivateTest"):
        load_dataset("fer2013", tmp_path, "test")


def test_empty_split_in_manifest(tmp_path: Path) -> None:
    make_manifest(tmp_path, ["path", "label", "split"], [["a.png", "happy", "train"]])
    with pytest.raises(EmptySplitError, match="found: train"):
        load_dataset("manifest", tmp_path, "test")


def test_empty_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train" / "happy").mkdir(parents=True)
    (tmp_path / "train" / "happy" / "notes.txt").write_text("no images here")
    with pytest.raises(EmptySplitError, match="no images"):
        load_dataset("folder", tmp_path, "train")


def test_empty_after_label_space_restriction(tmp_path: Path) -> None:
    make_class_tree(tmp_path, {"train": {"contempt": 2}})
    with pytest.raises(EmptySplitError):
        load_dataset("folder", tmp_path, "train", label_space="basic7")


def test_all_affwild2_frames_missing(tmp_path: Path) -> None:
    make_affwild2(tmp_path, {"Train_Set": {"v1": [0, 1]}}, missing={"v1": [1, 2]})
    (tmp_path / "cropped_aligned").mkdir()
    with pytest.warns(UserWarning, match="no frames"), pytest.raises(EmptySplitError):
        load_dataset("affwild2", tmp_path, "train")


def test_ferplus_folder_label_that_breaks_the_majority_rule(tmp_path: Path) -> None:
    make_ferplus_shared(tmp_path, [("train", "happy", [10, 0, 0, 0, 0, 0, 0, 0, 0, 0])])
    with pytest.raises(DataFormatError, match="line 2: .* filed as 'happy' but its votes .* give neutral"):
        load_dataset("ferplus", tmp_path, "train")
