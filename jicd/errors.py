"""The one exception type for problems with what a user gave us (file, key, value).

Every ``jicd`` command prints a :class:`UserError` (and an ``OSError`` from the file system) as
one line and exits 2 (:func:`jicd.command_line.run_guarded`); any other exception is a bug and
keeps its traceback. It subclasses ``ValueError`` so callers that validate values can catch either.
"""


class UserError(ValueError):
    """A problem with the user's input (file, option, config value); printed as one line."""
