"""How good a detected face is for recognition, measured from the image, the face's box and landmarks, and the
other faces in the image: the numbers the enrolment gate (:mod:`faceverify.quality.limits`) and video's choice of
frames (:func:`face_quality`) are made of."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..align import align_face
from ..detect import Face

CANONICAL_SIZE = 112
"""Side of the crop sharpness is measured on: every face is first brought to one scale, so that the figure does
not depend on the model or on the face's size in the image."""
CANONICAL_TEMPLATE = np.array([[38.0, 52.0], [74.0, 52.0], [56.0, 72.0], [40.0, 92.0], [72.0, 92.0]])
"""A frontal face's 5 landmarks on that crop (eyes 36 px apart), rounded from the usual 112-px template."""
SHARPNESS_HALF = 100.0
"""Sharpness at which a face's sharpness factor (sharpness / (sharpness + this)) is one half."""


def laplacian_sharpness(gray: np.ndarray) -> float:
    """Variance of the Laplacian of the centre of a square greyscale crop (a sixth of each side left out)."""
    m = gray.shape[0] // 6
    return float(cv2.Laplacian(gray[m:-m, m:-m], cv2.CV_64F).var())


def landmark_balance(landmarks: np.ndarray) -> float:
    """Left/right symmetry of the landmarks about the nose, in (0, 1]: 1 when each eye and mouth corner is as far
    from the nose as its partner."""
    left_eye, right_eye, nose, left_mouth, right_mouth = np.asarray(landmarks, np.float64)

    def balance(a: np.ndarray, b: np.ndarray) -> float:
        da, db = np.linalg.norm(a - nose), np.linalg.norm(b - nose)
        return float(min(da, db) / max(da, db, 1e-6))

    return float(np.sqrt(balance(left_eye, right_eye) * balance(left_mouth, right_mouth)))


def face_quality(crop: np.ndarray, landmarks: np.ndarray) -> float:
    """How useful an aligned face crop is for recognition, in [0, 1): sharpness (variance of the Laplacian of
    the crop's centre, squashed) times frontality (left/right symmetry of the landmarks about the nose). What
    video ranks a track's frames by."""
    sharp = laplacian_sharpness(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY))
    return float(landmark_balance(landmarks) * sharp / (sharp + SHARPNESS_HALF))


def face_size(face: Face) -> float:
    """A face's size in pixels: the square root of its box's area."""
    return float(np.sqrt(face.area))


@dataclass(frozen=True)
class FaceQuality:
    """The measures of one detected face.

    ``eye_distance``: pixels between the eyes in the image; ``sharpness``: :func:`laplacian_sharpness` of the
    face brought to the canonical crop (eyes 36 px apart; the image's edge pixels repeated beyond it); ``yaw``:
    how far the nose sits off the line between the eyes' and the mouth's midpoints, in half eye distances (0
    frontal, about 1 in profile);
    ``eye_mouth_ratio``: eye distance over the distance from the eyes' midpoint to the mouth's (about 1 for a
    frontal face, smaller as the head turns); ``detector_score`` from ``detector``; ``second_face``: the size of
    the largest other face in the image relative to this one (0 when alone)."""

    eye_distance: float
    sharpness: float
    yaw: float
    eye_mouth_ratio: float
    detector_score: float
    second_face: float
    detector: str

    @property
    def score(self) -> float:
        """What to rank a person's faces by: the mean cosine similarity to the person's other photos that
        edgeface-xxs's embedding of this face is predicted to have, a linear function of
        :func:`ranking_features` fitted on LFW DevTrain (:data:`RANKING_WEIGHTS`)."""
        return float(RANKING_INTERCEPT + ranking_features(self) @ RANKING_WEIGHTS)

    def to_dict(self) -> dict:
        """JSON-ready, rounded."""
        return dict(score=round(self.score, 4), eye_distance=round(self.eye_distance, 1),
                    sharpness=round(self.sharpness, 1), yaw=round(self.yaw, 3),
                    eye_mouth_ratio=round(self.eye_mouth_ratio, 3), detector_score=round(self.detector_score, 4),
                    second_face=round(self.second_face, 3), detector=self.detector)


RANKING_FEATURES = ("log_eye_distance", "log_sharpness", "abs_yaw", "eye_mouth_ratio", "detector_score",
                    "second_face")
"""The measures :attr:`FaceQuality.score` is a linear function of (capped as :func:`ranking_features` says)."""
RANKING_WEIGHTS = np.array([-0.0241, -0.0032, -0.0276, 0.0172, 0.9631, -0.0081])
RANKING_INTERCEPT = -0.1934
"""Fitted by ``tools/quality_limits.py`` on LFW DevTrain (3,427 YuNet faces of 1,184 people, edgeface-xxs):
least squares of each face's mean genuine similarity on :data:`RANKING_FEATURES`, within each person (person
means removed, so that only how a person's photos differ counts); the intercept puts the score on the scale of
that similarity. Within-person R^2 0.067 (0.077 on the half of the people a fit on the other half never saw);
the detector score carries most of it (0.047 alone). The detector scores were YuNet's; MTCNN's faces are ranked
with the same weights."""


def ranking_features(q: FaceQuality) -> np.ndarray:
    """:data:`RANKING_FEATURES` of ``q``: log eye distance (capped at 60 px), log sharpness (capped at 1000, floored
    at 1), |yaw| (capped at 2), eye-mouth ratio (capped at 1.2), detector score, second face."""
    return np.array([np.log(min(max(q.eye_distance, 1.0), 60.0)), np.log(min(max(q.sharpness, 1.0), 1000.0)),
                     min(abs(q.yaw), 2.0), min(q.eye_mouth_ratio, 1.2), q.detector_score, q.second_face])


def pose(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw, eye_mouth_ratio) of :class:`FaceQuality` from 5 landmarks, measured in the face's own frame (the
    eye line made horizontal)."""
    points = np.asarray(landmarks, np.float64).reshape(5, 2)
    eyes = points[1] - points[0]
    eye_distance = max(float(np.linalg.norm(eyes)), 1e-6)
    across = eyes / eye_distance
    eye_mid, mouth_mid = points[:2].mean(0), points[3:].mean(0)
    down = mouth_mid - eye_mid
    height = max(float(np.linalg.norm(down)), 1e-6)
    axis = down / height
    offset = points[2] - eye_mid
    side = offset - (offset @ axis) * axis  # the nose's distance from the eyes-to-mouth line
    yaw = float(side @ across) / (eye_distance / 2)
    return yaw, eye_distance / height


def measure_face(image: np.ndarray, face: Face, faces: Sequence[Face], detector: str) -> FaceQuality:
    """The :class:`FaceQuality` of ``face``, one of ``faces`` detected in the RGB ``image`` by ``detector``."""
    points = np.asarray(face.landmarks, np.float64).reshape(5, 2)
    crop = align_face(image, points, CANONICAL_TEMPLATE, CANONICAL_SIZE, cv2.BORDER_REPLICATE)  # no edge at a cut
    size = max(face_size(face), 1e-6)
    others = [face_size(f) / size for f in faces if f is not face]
    yaw, ratio = pose(points)
    return FaceQuality(
        eye_distance=float(np.linalg.norm(points[1] - points[0])),
        sharpness=laplacian_sharpness(cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)),
        yaw=yaw, eye_mouth_ratio=ratio, detector_score=float(face.score),
        second_face=max(others, default=0.0), detector=detector,
    )
