"""The installed version of safepredict."""

__version__ = "0.1.0"
