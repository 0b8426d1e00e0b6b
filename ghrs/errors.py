"""User mistakes versus bugs.

A :class:`UserError` is a mistake the user can fix (a bad argument, an unknown id, a missing or corrupt
file, a split that cannot be made). Entry points wrapped with :func:`user_errors` print it as one line on
stderr and exit with code 2, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake the user can fix; the message names the value and the fix, in one line."""


class ConfigError(UserError, ValueError):
    """A configuration value or command-line argument that cannot be used."""


class UnknownIdError(UserError, KeyError):
    """A user or item id the data or the trained model does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; print it as written
        return str(self.args[0]) if self.args else ""


def find_user_error(exc: BaseException) -> UserError | None:
    """The :class:`UserError` behind ``exc``, following ``__cause__``/``__context__`` chains.

    Hydra's ``instantiate`` wraps whatever a ``_target_`` raises in an ``InstantiationException``; the
    user's mistake is then the cause, not the exception that reaches the entry point.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def user_errors(fn: F) -> F:
    """Decorate an entry point: a :class:`UserError` becomes ``error: <message>`` on stderr and exit code 2.

    Put it *inside* ``@hydra.main`` (Hydra would otherwise print the traceback and exit 1).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            cause = find_user_error(exc)
            if cause is None:
                raise  # a bug: keep its traceback
            message = " ".join(str(cause).split())  # one line, whatever the message holds
            print(f"error: {message}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper  # type: ignore[return-value]


def check_command_line(argv: list[str] | None = None) -> None:
    """Exit with code 2 and one line when a command-line override cannot be parsed (Hydra itself would
    exit 1 with a multi-line message). Call it before the ``@hydra.main`` function."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    args, _ = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    for override in args.overrides:
        try:
            OverridesParser.create().parse_overrides([override])
        except OverrideParseException as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "syntax error"
            print(f"error: cannot parse the argument {override!r} ({reason}); quote values with spaces, brackets or "
                  "braces for the shell and Hydra, e.g. users='[1,42]' side='{age:30,gender:F}'", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

