"""One error hierarchy for the whole package.

Each subclass also derives from the matching builtin so callers that only know
ValueError/RuntimeError still catch it.
"""


class AlpamayoError(Exception):
    """Base class of every error raised on purpose by alpamayo_ros."""


class ConfigError(AlpamayoError, ValueError):
    """A parameter, config file or checkpoint directory is invalid."""


class CheckpointError(ConfigError):
    """A checkpoint or processor directory is missing a file or does not match."""


class ModelInputError(AlpamayoError, ValueError):
    """Inputs handed to the model are malformed (shape, dtype, order, non-finite...)."""


class InputNotReady(AlpamayoError, LookupError):
    """Not enough (or too old, or implausible) sensor data to plan this tick.

    The message says why with the numbers; `code` is the machine-readable cause, a
    core.plan_result.ReasonCode (kept untyped here: this module imports nothing).
    """

    def __init__(self, message: str, code=None):
        super().__init__(message)
        self.code = code


class DecodeError(AlpamayoError, ValueError):
    """An image could not be decoded (unsupported encoding, corrupt data, wrong size)."""


class ModelRuntimeError(AlpamayoError, RuntimeError):
    """The model failed while running (exception inside torch, out of memory...)."""


class OdometryError(AlpamayoError, ValueError):
    """An odometry sample is refused (non-finite values, no valid orientation)."""
