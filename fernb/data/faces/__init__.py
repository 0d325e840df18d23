"""Offline face detection and eye-based alignment with the Haar cascades that ship inside OpenCV's wheel.

Nothing here downloads anything: the detectors are the cascades under ``cv2.data.haarcascades`` of the
``opencv-python-headless>=4.8,<5`` wheel (OpenCV 5 wheels no longer ship them).

Pipeline (what :class:`FaceAligner` does per image)::

    detect_faces      grayscale, upsample tiny inputs, pad, equalise; three frontal-face cascades vote; when none
                      fires, the search is repeated on copies rotated by +-15 degrees (faces with a strong roll)
    detect_landmarks  eyes from four eye cascades inside the upper part of the (rotation-corrected) face box, the pair
                      chosen by cascade support and face geometry; mouth from the smile cascade in the lower part,
                      kept only where it agrees with the eyes; nose always a geometric estimate
    align_face        similarity transform (rotation, uniform scale, translation) taking the eyes (and, optionally, a
                      detected mouth) onto a template given as fractions of the output size, then one warp

The detector is pluggable (``fernb.data.faces.detectors``): ``FaceAligner(detector="mtcnn")`` or ``"mediapipe"``
(optional wheels, ``make detectors``) find more faces and give the eyes, nose and mouth directly; ``"auto"`` takes the
best one installed, falling back to the cascades.

Every landmark carries its source (``"detected"``, ``"mirrored"``, ``"from_eyes"``, ``"from_box"``) so a figure
can tell measured points from estimated ones. ``left``/``right`` always mean *as seen in the image* (smaller x is
``left_eye``, which is the subject's right eye).

Measured (OpenCV 4.14, 2 CPU cores): a face in 100% of 400 CK+48 crops (both eyes in 99%) and 80.7% of 400 FER+
valid crops (both eyes in 74.5%; FER2013 holds many profile, occluded and cropped faces); about 0.1 s of CPU per
48x48 crop and 0.4 s per 512x512 photograph with a face. A photograph without a face costs the most (about 2 s at
512 px: every cascade at three angles); ``rotations=()`` skips the rotated retries.

Coordinates are pixels of the input image, x to the right and y down; angles are in degrees, counter-clockwise
positive as displayed (the convention of ``PIL.Image.rotate`` and ``cv2.getRotationMatrix2D``).
"""

from .align import FaceAligner, align_face, alignment_matrix
from .detect import EYE_CASCADES, FACE_CASCADES, MOUTH_CASCADE, detect_faces
from .detectors import (
    DETECTORS,
    Detection,
    Detector,
    MissingDetectorError,
    available_detectors,
    create_detector,
    detector_name,
    to_rgb_u8,
)
from .geometry import ImageLike, center_crop_matrix, similarity_transform, transform_points
from .images import EXAMPLE_IMAGE_SOURCES, IMAGE_SUFFIXES, example_images, load_images
from .landmarks import detect_landmarks
from .types import TEMPLATES, AlignmentResult, FaceBox, FaceTemplate, Landmarks

__all__ = [
    "FaceBox",
    "Landmarks",
    "FaceTemplate",
    "AlignmentResult",
    "ImageLike",
    "FaceAligner",
    "TEMPLATES",
    "FACE_CASCADES",
    "EYE_CASCADES",
    "MOUTH_CASCADE",
    "detect_faces",
    "Detection",
    "Detector",
    "DETECTORS",
    "MissingDetectorError",
    "available_detectors",
    "create_detector",
    "detector_name",
    "to_rgb_u8",
    "detect_landmarks",
    "align_face",
    "alignment_matrix",
    "similarity_transform",
    "transform_points",
    "center_crop_matrix",
    "example_images",
    "EXAMPLE_IMAGE_SOURCES",
    "IMAGE_SUFFIXES",
    "load_images",
]
