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
