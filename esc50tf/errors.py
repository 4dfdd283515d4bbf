"""The one exception type users see.

Library code raises :class:`Esc50Error` for every problem caused by input the
user controls (a file, a CSV row, a flag value). The message names the file,
row or value and says what is wrong; the CLI prints it and exits non-zero
without a traceback. Programming errors stay ordinary exceptions.
"""


class Esc50Error(Exception):
    """A problem with the user's input, reported without a traceback."""
