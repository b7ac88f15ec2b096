"""voxloop.client."""
