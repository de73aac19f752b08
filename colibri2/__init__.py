"""Colibri2 (jitsi:colibri2): the model, its XML and JSON codecs, and the XML elements Jingle shares.

Neutral ground: the bridge (bridge/colibri2_handler.py) and the focus (signaling/) both speak it, and it
imports neither, so neither has to import the other."""

from colibri2.model import Colibri2Error, ConferenceModified, ConferenceModify, Reason

__all__ = ["Colibri2Error", "ConferenceModified", "ConferenceModify", "Reason"]
