"""The one base class of user-facing errors: bad config, bad input data, a plan that cannot fit.
`deepwriter.train` reports them as one line (key path or file:line and field) with no traceback."""


class DeepwriterError(Exception):
    """A problem with the user's configuration, data or setup, not a bug in deepwriter."""
