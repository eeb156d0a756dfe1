"""Errors that reach the user as one line naming the problem and the fix."""


class PPOKitError(Exception):
    """Base class: the CLI prints these as `error: <message>` without a traceback."""


class ConfigError(PPOKitError, ValueError):
    """A config key, value or combination is invalid."""


class EnvError(PPOKitError):
    """The environment cannot be built, or produced data the trainer cannot use."""


class CheckpointError(PPOKitError):
    """A checkpoint is missing, corrupt or incompatible with the config."""


class ExportError(PPOKitError):
    """A policy cannot be exported, an exported file does not match the torch policy, or an
    exported file cannot be read."""


class OutputError(PPOKitError):
    """An output file or directory cannot be written."""


class MissingDependencyError(PPOKitError, ImportError):
    """An optional feature's package is not installed; the message names the pip extra."""


class RunDirError(PPOKitError):
    """A run directory is in use by another process, or already holds a run."""


class TrainingStopped(PPOKitError):
    """Training stopped on a fault (an env error, NaN/inf data, a failed write): the message
    names the cause in one line and where the last complete update was saved."""


class EnvStateUnsupported(PPOKitError):
    """An environment's state cannot be saved for an exact resume (async subprocess envs,
    external simulators, an attribute of a kind ppokit cannot copy). `reason` is one line that
    names the env and what cannot be saved; a resume then restarts the episodes instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
