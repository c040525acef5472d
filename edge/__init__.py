"""Cabinet edge firmware: masked capture, sealed recording and uplink of video-protection units."""

__version__ = "0.1.0"
