"""The held-out split: voices and phrasings no trained model ever hears.

Every job that builds training data (the synth plan, the codec corpus, packing)
and every evaluation reads the split from here, so one definition keeps it out.
"""

from __future__ import annotations

HELDOUT_VOICES = ("festival:kal", "flite:awb", "espeak:en-gb-scotland+m3")
# voices of a held-out voice's speaker, which nothing trains on either: flite's kal16 is
# built from the same KAL diphone recordings as festival's kal_diphone (their long-term
# spectra correlate 0.99; distinct voices here 0.68-0.93)
SAME_SPEAKER_AS_HELDOUT = ("flite:kal16",)


def trainable(voice: str) -> bool:
    """May ``voice`` speak anything a model trains on (or is chosen on)?"""
    return voice not in HELDOUT_VOICES and voice not in SAME_SPEAKER_AS_HELDOUT
HELDOUT_TEMPLATE = 5  # the sixth phrasing of every intent is never trained on
