"""Errors a user can act on: each message says what went wrong and how to fix it."""


class VoxloopError(Exception):
    """A failure with a message meant for the user; the CLI prints it and exits 1."""


class MissingDependencyError(VoxloopError):
    """A system program or Python package that a backend needs is not installed."""


class ModelIntegrityError(VoxloopError):
    """A model file exists but its bytes are not the pinned ones."""
