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


def check_command_line(config_name: str | None = None, argv: list[str] | None = None) -> None:
    """Exit with code 2 and one line when the command line cannot be used: an override Hydra cannot parse,
    or (given ``config_name``) one it cannot compose into that config, such as an unknown group option
    (``model=foo``) or key (``trainer.foo=1``). Hydra alone would exit 1 with a multi-line message. Call it
    before the ``@hydra.main`` function; multiruns and custom config paths are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException

    args, _ = get_args_parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    for override in args.overrides:
        try:
            OverridesParser.create().parse_overrides([override])
        except OverrideParseException as exc:
            reason = str(exc).splitlines()[0] if str(exc) else "syntax error"
            _exit(f"cannot parse the argument {override!r} ({reason}); quote values with spaces, brackets or "
                  "braces for the shell and Hydra, e.g. users='[1,42]' side='{age:30,gender:F}'")
    if config_name is None or args.multirun or args.config_path or args.config_dir or args.config_name:
        return
    from ghrs.paths import config_dir

    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            compose(config_name, overrides=[o for o in args.overrides if not o.lstrip("+~").startswith("hydra.")])
    except HydraException as exc:
        message = str(exc).split("Config search path")[0]  # Hydra's search-path listing says nothing new
        _exit(" ".join(line.strip() for line in message.splitlines() if line.strip()))


def _exit(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
