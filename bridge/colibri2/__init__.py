"""Colibri2 (jitsi:colibri2): the model, its XML and JSON codecs, and the sans-IO handler over a Bridge."""

from bridge.colibri2.model import Colibri2Error, ConferenceModified, ConferenceModify, Reason

__all__ = ["Colibri2Error", "ConferenceModified", "ConferenceModify", "Reason"]
