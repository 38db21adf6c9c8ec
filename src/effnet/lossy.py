"""Former home of the real photos, the int8 calibration sets and the agreement metric, kept importable.

They live in `effnet.data.photos` (the photos), `effnet.data.calibration` (calibration and evaluation views) and
`effnet.agreement` (top-1 agreement of a lossy path with fp32).
"""

from effnet.agreement import CONFIDENT, Agreement, agreement, measure_agreement
from effnet.data.calibration import calibration_images, photo_batch
from effnet.data.photos import PHOTO_NAMES, PhotosUnavailable, photos

__all__ = ["CONFIDENT", "PHOTO_NAMES", "Agreement", "PhotosUnavailable", "agreement", "calibration_images",
           "measure_agreement", "photo_batch", "photos"]
