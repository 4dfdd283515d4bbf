"""The one exception type users see.

Library code raises :class:`Esc50Error` for every problem caused by input the
user controls (a file, a CSV row, a flag value). The message names the file,
row or value and says what is wrong; the CLI prints it and exits non-zero
without a traceback. Programming errors stay ordinary exceptions.
"""


class Esc50Error(Exception):
    """A problem with the user's input, reported without a traceback."""


# Causes a user fixes outside esc50tf (space, permissions), as TensorFlow words them.
_SYSTEM_CAUSES = ("No space left on device", "Permission denied", "Read-only file system",
                  "Disk quota exceeded")


def system_error_line(err):
    """One line for a failure of the machine rather than of esc50tf, or None.

    A full disk, a read-only or forbidden folder: Python's OSError (naming the
    path when it has one) and TensorFlow's errors that say so, e.g.
    "runs/a/fold1/model.keras: No space left on device [errno 28]".

    Args:
        err: an exception.

    Returns:
        str or None (not such a failure: let it propagate).
    """
    if isinstance(err, OSError):
        cause = err.strerror or str(err) or type(err).__name__
        where = err.filename or ""
        if err.filename2:
            where = f"{where} -> {err.filename2}"
        code = f" [errno {err.errno}]" if err.errno else ""
        return f"{where}: {cause}{code}" if where else f"{cause}{code}"
    text = str(err)
    for cause in _SYSTEM_CAUSES:
        if cause in text:
            first = text.strip().splitlines()[0] if text.strip() else cause
            return f"{first[:300]} ({cause})" if cause not in first else first[:300]
    return None
