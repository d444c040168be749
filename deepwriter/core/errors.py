"""The one base class of user-facing errors: bad config, bad input data, a plan that cannot fit.
`deepwriter.train` reports them as one line (key path or file:line and field) with no traceback, on a
line of its own after any progress bar (`print_error`)."""

import contextlib
import sys


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


# --- one-line messages of the command-line tools ---------------------------------------------


class LineEnds:
    """A text stream (stderr) that remembers whether the last thing written to it left a line open:
    a progress bar redraws its line with carriage returns and never ends it while it runs. On a
    terminal a line left at a carriage return is empty (the bar cleared itself); in a file or pipe it
    still holds the bar's text."""

    def __init__(self, stream):
        self.stream = stream
        self.open_line = False

    def write(self, text: str) -> int:
        if text:
            at_start = text.endswith("\n") or (text.endswith("\r") and self.isatty())
            self.open_line = not at_start
        return self.stream.write(text)

    def isatty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def tracked_stderr():
    """sys.stderr as a LineEnds while a command-line tool runs (its progress bars and logs write
    through it), so that `print_error` knows whether a line is open."""
    tracked = sys.stderr if isinstance(sys.stderr, LineEnds) else LineEnds(sys.stderr)
    before, sys.stderr = sys.stderr, tracked
    try:
        yield tracked
    finally:
        if sys.stderr is tracked:
            sys.stderr = before


def print_error(line: str) -> None:
    """A tool's one-line message on stderr, on a line of its own: live progress bars are closed
    first (one that stays on screen ends its line, a transient one clears itself) and a line still
    open is ended."""
    tqdm = sys.modules.get("tqdm")  # only bars that exist matter: never import tqdm for this
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            try:
                bar.close()
            except Exception:  # noqa: BLE001 - a bar that cannot draw must not hide the message
                pass
    stream = sys.stderr
    if isinstance(stream, LineEnds) and stream.open_line:
        stream.write("\n")
    print(line, file=stream, flush=True)
