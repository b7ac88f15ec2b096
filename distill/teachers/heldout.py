"""The held-out split: voices and phrasings no trained model ever hears.

Every job that builds training data (the synth plan, the codec corpus, packing)
and every evaluation reads the split from here, so one definition keeps it out.
"""

from __future__ import annotations

HELDOUT_VOICES = ("festival:kal", "flite:awb", "espeak:en-gb-scotland+m3")
HELDOUT_TEMPLATE = 5  # the sixth phrasing of every intent is never trained on
