"""Face quality: the measures of a detected face (:mod:`.measures`) and the enrolment gate's limits on them
(:mod:`.limits`)."""

from .measures import FaceQuality, face_quality, measure_face

__all__ = ["FaceQuality", "face_quality", "measure_face"]
