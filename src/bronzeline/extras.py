"""Optional dependencies. The core installs what replication needs; the demo's embedded server,
the web server and S3 support are extras, and a command that needs a missing one says which."""

from __future__ import annotations

import importlib.util

from bronzeline.errors import BronzelineError

# extra -> what it is for (in the message)
EXTRAS = {"demo": "bronzeline demo", "serve": "bronzeline serve", "s3": "an s3:// blob.url",
          "dagster": "bronzeline.dagster"}


class MissingExtra(BronzelineError):
    """A command needs an optional dependency that is not installed."""

    def __init__(self, extra: str, module: str, what: str | None = None) -> None:
        self.extra, self.module = extra, module
        needs = what or EXTRAS.get(extra, extra)
        super().__init__(f"{needs} needs the '{extra}' extra: pip install \"bronzeline[{extra}]\"")


def require(extra: str, *modules: str, what: str | None = None) -> None:
    """Raise MissingExtra unless every module can be imported (found, not imported: cheap). `what` names
    what needs it when that is not the extra's usual user (e.g. `bronzeline receive` for `serve`)."""
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingExtra(extra, module, what)
