"""Readers for every supported dataset in its published layout; importing this package registers them all.

=========  ==========================================================================================
name       layouts
=========  ==========================================================================================
rafdb      ``EmoLabel/list_patition_label.txt`` + ``Image/aligned``; MA-Net / POSTER_V2 class folders
fer2013    ``fer2013.csv`` (or ``icml_face_data.csv``); the ``train/<class>`` image release
ferplus    Microsoft ``FER2013*/label.csv``; ``fer2013new.csv`` + ``fer2013.csv``; class folders + manifest
affectnet  ``training.csv`` / ``validation.csv`` + ``Manually_Annotated_Images``; class folders
jaffe      ``KA.AN1.39.tiff`` files
ckplus     CK+48 class folders (+ manifest); original ``Emotion/`` + ``cohn-kanade-images/``
affwild2   ABAW ``annotations/EXPR_Set`` + ``cropped_aligned``
folder     any ``<split>/<class>/`` tree
manifest   any ``path,label[,subject,split,dist_*]`` CSV
=========  ==========================================================================================
"""

from __future__ import annotations

from . import affectnet, affwild2, ckplus, fer2013, ferplus, folder, jaffe, rafdb  # noqa: F401  (registration)
from ._common import verify_images

__all__ = ["verify_images"]
