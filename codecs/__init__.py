"""voxloop.codecs."""
