"""Predict expressions on your own photographs, folders, videos and cameras: every face found, aligned as the run's
training data was, classified in batches.

Pipeline per frame::

    decode     an image file (PIL), a video frame or a camera frame (``cv2.VideoCapture``), as (H, W, 3) uint8 RGB
    detect     every face with its landmarks (the detector named by the run's ``data.align``, else ``"auto"``)
    align      each face on its own: the similarity transform taking its eyes onto the alignment template, warped
               to the run's input size (``data.img_size``); gray for runs trained on gray datasets (FER2013, FER+,
               CK+, JAFFE), whose models never saw colour
    model      the run's evaluation transform (``fernb.engine.data.run_transform``: its channels, normalisation
               and channel order) and the model in eval mode, crops of several frames in one batch

A model only recognises what looks like its training input: a crop of another size, framing or colour is a shift
of distribution that costs accuracy silently, so the crops are made exactly as the run's own split was.

One :class:`FacePrediction` per face, or one row with ``status="no face"`` (nothing detected) or ``"error"`` (an
unreadable file) per frame, so a folder with a bad file still finishes. ARBEx runs add their primary, anchor,
attention, correction and corrected distributions and the three confidences (:mod:`fernb.models.arbex`).

Example::

    from fernb.engine.faces import predict_faces
    result = predict_faces("photos/", "runs/arbex-synthetic-s0", out="faces.csv", annotate="annotated/")
    result.frame()          # one row per face: box, landmarks, probabilities, label

Command line: ``python -m fernb predict photos/ clip.mp4 --run runs/arbex-synthetic-s0 --out faces.csv``.

The modules, by concern (each imports only those above it): :mod:`.frames` (reading images, folders, videos and
cameras), :mod:`.results` (the rows and their tables), :mod:`.predictor` (detect, align, classify), :mod:`.drawing`
(annotated images and videos), :mod:`.pipeline` (:func:`predict_faces` and the command line).
"""

from __future__ import annotations

from .drawing import annotate_frame
from .frames import VIDEO_SUFFIXES, Frame, iter_frames, side_by_side
from .pipeline import predict_faces, predict_main
from .predictor import GRAY_DATASETS, FacePredictor
from .results import ARBEX_EXTRAS, FacePrediction, FacePredictions

__all__ = [
    "VIDEO_SUFFIXES",
    "GRAY_DATASETS",
    "ARBEX_EXTRAS",
    "Frame",
    "FacePrediction",
    "FacePredictions",
    "FacePredictor",
    "iter_frames",
    "side_by_side",
    "annotate_frame",
    "predict_faces",
    "predict_main",
]
