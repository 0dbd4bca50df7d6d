"""kinoray: self-hostable video infrastructure on Ray.

The engine lives in :mod:`kinoray.media` (pure PyAV) and :mod:`kinoray.encoders`; :mod:`kinoray.cluster`
fans chunks out over Ray.
"""

from kinoray.errors import InvalidMediaError, KinorayError
from kinoray.media import TranscodeOptions, TranscodeResult, probe, transcode_file

__version__ = "0.1.0"

__all__ = ["InvalidMediaError", "KinorayError", "TranscodeOptions", "TranscodeResult", "__version__", "probe",
           "transcode_file"]
