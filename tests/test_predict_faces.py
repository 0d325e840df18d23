"""``fernb predict``: every face of an image, a folder, a video or a camera, aligned and classified as the run was
trained; rows for frames without a face or that cannot be read; CSV / JSON tables and annotated copies."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import fernb
from fernb.data.faces import example_images
from fernb.engine import apply_overrides, fit
from fernb.engine.data import run_transform
from fernb.engine.faces import ARBEX_EXTRAS, FacePredictor, iter_frames, predict_faces, predict_main
from fernb.engine.factory import load_run
from fernb.notebooks import method_config


def _train(runs: Path, method: str) -> Path:
    cfg = method_config(method, "synthetic", True, runs=str(runs), device="cpu", quiet=True)
    cfg = apply_overrides(cfg, {"schedule.epochs": 1, "data.train_limit": 40, "data.valid_limit": 16})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Path(fit(cfg).run_dir)


@pytest.fixture(scope="module")
def arbex_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("runs"), "arbex")


@pytest.fixture(scope="module")
def predictor(arbex_run) -> FacePredictor:
    return FacePredictor.from_run(arbex_run, detector="haar")


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return dict(example_images(["astronaut", "grace_hopper"]))


def _face(photos, side: int = 200) -> np.ndarray:
    """The astronaut's head and shoulders, ``side`` px square (a face about half the side)."""
    return cv2.resize(np.ascontiguousarray(photos["astronaut"][20:240, 120:340]), (side, side))


def _two_faces(photos) -> np.ndarray:
    a, g = photos["astronaut"], photos["grace_hopper"]
    out = np.zeros((600, 1024, 3), np.uint8)
    out[:512, :512], out[:, 512:] = a, g
    return out


def _video(path: Path, photos, n: int = 6) -> Path:
    """``n`` frames of 320x240 at 10 fps: the astronaut's head pasted at a position that moves."""
    face = _face(photos, 160)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (320, 240))
    assert writer.isOpened()
    for i in range(n):
        frame = np.full((240, 320, 3), 90, np.uint8)
        x = 20 + 10 * i
        frame[40:200, x : x + 160] = face
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


# -- sources ----------------------------------------------------------------------------------------------------------
def test_an_image_file_gives_one_row_per_face_with_probabilities(predictor, photos, tmp_path):
    Image.fromarray(photos["grace_hopper"]).save(tmp_path / "hopper.jpg")
    res = predict_faces(tmp_path / "hopper.jpg", predictor)
    (row,) = res.rows
    assert row.status == "ok" and row.source.endswith("hopper.jpg") and row.frame == 0 and row.face == 0
    assert row.probs is not None and np.isclose(row.probs.sum(), 1.0, atol=1e-4)
    assert row.label in predictor.class_names and row.confidence == pytest.approx(row.probs.max())
    assert 100 < row.box.x < 250 and row.landmarks is not None


def test_an_image_with_two_faces_gives_two_rows(predictor, photos):
    res = predict_faces(("pair", _two_faces(photos)), predictor)
    assert [r.face for r in res] == [0, 1] and all(r.status == "ok" for r in res)
    xs = sorted(r.box.x for r in res)
    assert xs[0] < 512 < xs[1], "one face on each side"


def test_an_image_without_a_face_gives_a_no_face_row(predictor):
    res = predict_faces(("blank", np.full((160, 200, 3), 128, np.uint8)), predictor)
    (row,) = res.rows
    assert row.status == "no face" and row.box is None and row.probs is None and row.label is None


def test_a_folder_with_a_corrupt_image_reports_it_and_goes_on(predictor, photos, tmp_path):
    Image.fromarray(_face(photos)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg at all")
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "c.png")
    (tmp_path / "notes.txt").write_text("ignored")
    res = predict_faces(tmp_path, predictor)
    by_file = {Path(r.source).name: r for r in res}
    assert list(by_file) == ["a.png", "b.jpg", "c.png"]
    assert by_file["a.png"].status == "ok"
    assert by_file["b.jpg"].status == "error" and "b.jpg" in by_file["b.jpg"].error
    assert by_file["c.png"].status == "no face"


def test_a_missing_path_is_a_clear_error(predictor, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        predict_faces(tmp_path / "nope.jpg", predictor)
    with pytest.raises(FileNotFoundError, match="no image or video"):
        predict_faces(tmp_path, predictor)


def test_a_video_gives_a_row_per_frame_and_every_strides(predictor, photos, tmp_path):
    video = _video(tmp_path / "clip.mp4", photos)
    res = predict_faces(video, predictor)
    assert [r.frame for r in res] == list(range(6)) and all(r.status == "ok" for r in res)
    assert res[1].time_s == pytest.approx(0.1)
    strided = predict_faces(video, predictor, every=2)
    assert [r.frame for r in strided] == [0, 2, 4]


def test_detect_every_reuses_the_boxes_between_detections(predictor, photos, tmp_path):
    video = _video(tmp_path / "clip.mp4", photos)
    res = predict_faces(video, predictor, detect_every=3)
    assert [r.detected for r in res] == [True, False, False, True, False, False]
    assert res[1].box == res[0].box and res[4].box == res[3].box


def test_a_camera_index_is_read_like_a_video(predictor, photos, tmp_path, monkeypatch):
    """No camera here: ``cv2.VideoCapture`` of an index is replaced by the test's video (device 0) or by a device
    that does not open (any other index)."""
    video = _video(tmp_path / "clip.mp4", photos, n=4)
    real = cv2.VideoCapture
    opened: list[object] = []

    def fake_capture(source):
        assert isinstance(source, int), "a camera index must reach OpenCV as an int"
        opened.append(source)
        return real(str(video)) if source == 0 else real(str(tmp_path / "no-such-device.mp4"))

    monkeypatch.setattr(cv2, "VideoCapture", fake_capture)
    res = predict_faces("0", predictor, every=2)
    assert opened == [0] and [r.frame for r in res] == [0, 2]
    assert {r.source for r in res} == {"camera:0"} and all(r.status == "ok" for r in res)
    (row,) = predict_faces(3, predictor).rows
    assert row.status == "error" and "cannot open camera 3" in row.error


def test_an_unreadable_video_gives_an_error_row(predictor, tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 100)
    (row,) = predict_faces(tmp_path / "broken.mp4", predictor).rows
    assert row.status == "error" and "broken.mp4" in row.error


def test_iter_frames_reads_arrays_pairs_and_lists(photos):
    frames = list(iter_frames([photos["astronaut"], ("hopper", photos["grace_hopper"])]))
    assert [f.source for f in frames] == ["image", "hopper"]
    assert frames[0].image.shape == (512, 512, 3) and frames[0].image.dtype == np.uint8


# -- what the model sees ----------------------------------------------------------------------------------------------
def test_crops_are_the_runs_input_through_its_evaluation_transform(arbex_run, predictor, photos):
    cfg, model, _ = load_run(arbex_run)
    res = predict_faces(("face", _face(photos)), predictor, keep_crops=True)
    crop = res[0].crop
    assert crop.shape == (cfg.data.img_size, cfg.data.img_size, 3) and crop.dtype == np.uint8
    x = run_transform(cfg, False)(Image.fromarray(crop))[None]
    with torch.no_grad():
        want = torch.softmax(model(x).logits, 1)[0].numpy()
    np.testing.assert_allclose(res[0].probs, want, atol=1e-5)


def test_gray_runs_see_gray_crops(arbex_run, photos):
    gray = FacePredictor.from_run(arbex_run, detector="haar")
    gray.gray = True
    crop = predict_faces(("face", _face(photos)), gray, keep_crops=True)[0].crop
    assert np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 1], crop[..., 2])


def test_arbex_rows_carry_the_branch_distributions_and_confidences(predictor, photos):
    row = predict_faces(("face", _face(photos)), predictor)[0]
    for name in ARBEX_EXTRAS:
        assert row.extras[name].shape == (len(predictor.class_names),)
        assert np.isclose(row.extras[name].sum(), 1.0, atol=1e-4)
    for k in ("c_primary", "c_anchor", "c_attention"):
        assert 0.0 <= float(row.extras[k]) <= 1.0
    np.testing.assert_allclose(row.probs, row.extras["corrected"], atol=1e-4)  # "fixed" predicts argmax m
    rec = row.record()["arbex"]
    assert set(rec) == {*ARBEX_EXTRAS, "labels", "confidences"} and set(rec["confidences"]) == {
        "primary",
        "anchor",
        "attention",
    }


def test_batches_do_not_change_the_predictions(predictor, photos):
    faces = [(f"f{i}", _face(photos, 160 + 20 * i)) for i in range(3)]
    one = predict_faces(faces, predictor, batch_size=1)
    many = predict_faces(faces, predictor, batch_size=8)
    np.testing.assert_allclose(np.stack([r.probs for r in one]), np.stack([r.probs for r in many]), atol=1e-5)


# -- outputs ----------------------------------------------------------------------------------------------------------
def test_csv_and_json_tables_have_the_promised_columns(predictor, photos, tmp_path):
    src = [("pair", _two_faces(photos)), ("blank", np.full((100, 100, 3), 128, np.uint8))]
    res = predict_faces(src, predictor, out=tmp_path / "faces.csv")
    predict_faces(src, predictor, out=tmp_path / "faces.json")
    with open(tmp_path / "faces.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and [r["status"] for r in rows] == ["ok", "ok", "no face"]
    cols = set(rows[0])
    classes = predictor.class_names
    assert {"source", "frame", "face", "x", "y", "w", "h", "left_eye_x", "mouth_y", "label", "confidence"} <= cols
    assert {f"p_{c}" for c in classes} <= cols and {f"corrected_{c}" for c in classes} <= cols
    assert {"c_primary", "c_anchor", "c_attention", "label_primary", "label_corrected"} <= cols
    recs = json.loads((tmp_path / "faces.json").read_text())
    assert len(recs) == 3 and set(recs[0]["probs"]) == set(classes) and set(recs[0]["box"]) >= {"x", "y", "w", "h"}
    assert recs[0]["points"]["left_eye"][0] < recs[0]["points"]["right_eye"][0] and recs[2]["status"] == "no face"
    assert res.frame().shape[0] == 3


def test_annotated_images_and_videos_are_written(predictor, photos, tmp_path):
    video = _video(tmp_path / "clip.mp4", photos, n=4)
    Image.fromarray(_face(photos)).save(tmp_path / "face.png")
    res = predict_faces([tmp_path / "face.png", video], predictor, annotate=tmp_path / "out")
    assert sorted(p.name for p in res.outputs) == ["clip.mp4", "face.png"]
    img = np.asarray(Image.open(tmp_path / "out" / "face.png"))
    assert img.shape == (200, 200, 3) and not np.array_equal(img, _face(photos))  # something was drawn
    cap = cv2.VideoCapture(str(tmp_path / "out" / "clip.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 320
    cap.release()


# -- model sources and entry points -----------------------------------------------------------------------------------
def test_a_model_name_and_checkpoint_file_predict_too(photos, tmp_path):
    from safetensors.torch import save_file

    net = fernb.create_model("resnet18", "tiny", num_classes=8)
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    res = predict_faces(
        ("face", _face(photos)), "resnet18", checkpoint=tmp_path / "w.safetensors", preset="tiny", detector="haar"
    )
    (row,) = res.rows
    assert row.class_names == list(fernb.labels.get_label_space("ferplus8").names) and row.extras == {}
    pred = FacePredictor.from_checkpoint("resnet18", tmp_path / "w.safetensors", preset="tiny", detector="haar")
    assert pred.img_size == net.pretrained_cfg.img_size


def test_the_command_line_writes_the_table(arbex_run, photos, tmp_path, capsys):
    Image.fromarray(_face(photos)).save(tmp_path / "face.png")
    code = predict_main(
        [str(tmp_path / "face.png"), "--run", str(arbex_run), "--detector", "haar", "--out", str(tmp_path / "f.csv")]
    )
    assert code == 0 and (tmp_path / "f.csv").exists()
    assert "1 face(s)" in capsys.readouterr().out
    assert predict_main([str(tmp_path / "missing.png"), "--run", str(arbex_run)]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict_main([str(tmp_path / "face.png")])  # neither --run nor --model


def test_fernb_predict_is_the_package_level_entry_point():
    assert fernb.predict is predict_faces


# -- figures and the upload widget ------------------------------------------------------------------------------------
def test_face_figures_show_crops_maps_and_reliability(predictor, photos):
    from matplotlib.figure import Figure

    from fernb.explore.gradcam import compute_cams
    from fernb.viz.faces import face_reliability_sample, plot_annotated, plot_face_predictions
    from fernb.viz.reliability import plot_reliability_sample

    src = [("pair", _two_faces(photos)), ("blank", np.full((80, 80, 3), 128, np.uint8))]
    res = predict_faces(src, predictor, keep_crops=True)
    assert isinstance(plot_annotated(src, res.rows), Figure)
    cams = compute_cams(predictor.model, predictor.inputs([r.crop for r in res.faces]))
    assert len(plot_face_predictions(res.rows, cams).axes) == 2 * 3
    sample = face_reliability_sample(res.faces[0])
    assert sample.given is None and set(sample.confidences) == {"primary", "anchor", "attention", "corrected"}
    fig = plot_reliability_sample(sample)
    assert "no given label" in fig._suptitle.get_text()


def test_the_upload_widget_predicts_each_file_and_reports_non_images(predictor, photos):
    import io

    from fernb.widgets.faces import face_upload

    widget, state = face_upload(predictor)
    buf = io.BytesIO()
    Image.fromarray(_face(photos)).save(buf, format="PNG")
    rows = state.add("me.png", buf.getvalue())
    assert [r.status for r in rows] == ["ok"] and state.faces is not None and state.annotated is not None
    assert state.add("notes.txt", b"hello") == [] and "notes.txt" in state.errors["notes.txt"]
    assert len(state.images) == 1


def test_a_run_trained_on_aligned_faces_predicts_with_its_detector_and_template(arbex_run, tmp_path):
    import shutil

    run = Path(shutil.copytree(arbex_run, tmp_path / "aligned-run"))
    record = json.loads((run / "run.json").read_text())
    record["data"]["align"] = {"detector": "haar", "template": "arcface", "use_mouth": False, "border": "replicate"}
    (run / "run.json").write_text(json.dumps(record))
    pred = FacePredictor.from_run(run)
    assert (pred.template.name, pred.detector_name, pred.border) == ("arcface", "haar", "replicate")
    assert FacePredictor.from_run(arbex_run, detector="haar").template.name == "fer"  # unaligned data: fer
