"""The one base class of user-facing errors: bad config, bad input data, a plan that cannot fit.
`deepwriter.train` reports them as one line (key path or file:line and field) with no traceback."""


class DeepwriterError(Exception):
    """A problem with the user's configuration, data or setup, not a bug in deepwriter."""


class UnfinishedError(DeepwriterError):
    """A stage ended with items left unfinished because model calls failed for reasons of
    infrastructure (a server down, timeouts after every retry). Nothing about those items was
    recorded as a result; the stage's output stays unfinished and a re-run does exactly them."""

    def __init__(self, stage: str, what: str, unfinished: int, total: int, last_error: str):
        self.stage, self.what, self.unfinished, self.total, self.last_error = stage, what, unfinished, total, last_error
        super().__init__(
            f"{stage}: {unfinished} of {total} {what} unfinished: model calls failed after their retries "
            f"(last: {last_error[:300]}); finished work is kept, re-run the same command to do the rest"
        )


class ConfigError(DeepwriterError, ValueError):
    """A bad configuration, reported as one line naming the key path."""
