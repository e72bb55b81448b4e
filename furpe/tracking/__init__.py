"""Videos: who is who across frames (:mod:`~furpe.tracking.tracker`) and temporal smoothing
of each person's parameters (:mod:`~furpe.tracking.smoothing`).

Used by :class:`furpe.pipeline.VideoSession`; single images are neither tracked nor smoothed.
Pure NumPy and SciPy.
"""
from furpe.tracking.smoothing import (OneEuroFilter, PersonSmoother, Smoother, SmoothingConfig,
                                      quat_to_rotvec, rotvec_to_quat)
from furpe.tracking.tracker import Track, Tracker, TrackingConfig, assign, association_cost

__all__ = [
    "OneEuroFilter", "PersonSmoother", "Smoother", "SmoothingConfig", "Track", "Tracker",
    "TrackingConfig", "assign", "association_cost", "quat_to_rotvec", "rotvec_to_quat",
]
