"""The errors of strict loading. Each message names what is wrong: the key as stored in the file,
the shapes, the file, the architecture. transformers only warns about these; minivlm refuses."""


class CheckpointError(ValueError):
    """Base class: the checkpoint does not fit the model, or cannot be read."""


class MissingConfigError(CheckpointError, FileNotFoundError):
    pass


class UnknownArchitectureError(CheckpointError):
    pass


class MissingWeightsError(CheckpointError):
    pass


class UnusedWeightsError(CheckpointError):
    pass


class ShapeMismatchError(CheckpointError):
    pass
