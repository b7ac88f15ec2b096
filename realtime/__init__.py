"""voxloop.realtime."""
