"""voxloop: a self-hosted, real-time speech-to-speech assistant.

The sub-packages live in the repository's top-level folders and are installed
under this namespace: ``voxloop.codecs``, ``voxloop.distill``,
``voxloop.realtime`` and ``voxloop.client``. Importing this package loads
nothing heavy.
"""

__version__ = "0.1.0"
