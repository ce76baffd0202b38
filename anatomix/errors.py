"""The exception types that anatomix raises on purpose.

Every error a user can cause (a bad file, a bad option) is one of these, with a message that
names the file and the cause; anything else escaping is a bug.
"""


class AnatomixError(Exception):
    """Base class of all deliberate anatomix errors."""


class ReadError(AnatomixError):
    """A radiograph, mask or table could not be read.

    The message always starts with the path, then the cause: ``"x.png: truncated PNG data"``.
    """

    def __init__(self, path, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class CheckpointError(AnatomixError):
    """A checkpoint (model, detector, training state) that is refused or cannot be read.

    The message is one line: the path, then the reason, e.g.
    ``"evil.pt: refused: loading it needs a full unpickle, which runs code from the file (...)"``.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UsageError(AnatomixError, ValueError):
    """A bad argument: an unknown name, a value out of range, options that do not go together.

    Also a ``ValueError``, so code that guards a call with ``except ValueError`` keeps working.
    The command line prints the message and exits with status 2.
    """
