"""Embedders (log-mel [B, T, F] -> L2-normalised [B, D]) and the heads on top."""

from hive.models.model import (ENCODERS, SpeakerModel, abstract_params,  # noqa: F401
                               carried_over, create_model, init_params)
