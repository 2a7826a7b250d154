"""Embedders (log-mel [B, T, F] -> L2-normalised [B, D]) and the heads on top."""

from hive.models.model import SpeakerModel, create_model  # noqa: F401
