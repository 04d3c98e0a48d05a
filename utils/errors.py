"""Errors a user can fix, how a script exits on them, and the range check of numeric arguments."""
import math
import sys


class StageError(Exception):
    """A one-line error that names the fix; scripts print it instead of a traceback."""


def run_main(main):
    """Run a script's main(), turning a StageError into one line on stderr and exit code 2; the
    image folders it checks are each looked at once (utils.files.one_look)."""
    from utils.files import one_look

    try:
        with one_look():
            main()
    except StageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: no partial output was written", file=sys.stderr)
        sys.exit(130)


def add_number(parser, flag, kind, default=None, *, low=None, high=None, low_open=False, ordered=False, **kwargs):
    """parser.add_argument for a number with its allowed range, checked by `parse_args` (below).

    low/high are inclusive bounds (None: unbounded); low_open makes the lower bound exclusive;
    `ordered` (with nargs and a metavar tuple such as MIN MAX): no value may exceed the next."""
    action = parser.add_argument(flag, type=kind, default=default, **kwargs)
    action.allowed_range = (low, high, low_open)
    action.ordered = ordered
    return action


def describe_range(kind, low, high, low_open):
    name = "a finite number" if kind is float else "an integer"
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        parts.append(f"<= {high}")
    return name + (" " + " and ".join(parts) if parts else "")


def check_ranges(parser, args):
    """Every number given to an argument declared with add_number is finite and in its range."""
    for action in parser._actions:
        if not hasattr(action, "allowed_range"):
            continue
        value = getattr(args, action.dest)
        low, high, low_open = action.allowed_range
        for number in value if isinstance(value, list) else [value]:
            if number is None or isinstance(number, str):  # a word the argument's type allows (`auto`)
                continue
            bad = (isinstance(number, float) and not math.isfinite(number)) or (
                low is not None and (number <= low if low_open else number < low)) or (high is not None and number > high)
            if bad:
                raise StageError(f"{action.option_strings[-1]} must be {describe_range(action.type, low, high, low_open)}, got {number}")
        if getattr(action, "ordered", False) and isinstance(value, list) and value != sorted(value):
            names = action.metavar if isinstance(action.metavar, tuple) else ("a value", "the next")
            raise StageError(f"{action.option_strings[-1]} {' '.join(map(str, value))}: {names[0]} must not exceed {names[-1]}")
    return args


def parse_args(parser, argv=None):
    """Parse, then check every numeric range before any work is done. A malformed command line is
    one `error:` line too (argparse's own message, without its usage block)."""
    def one_line(message):
        raise StageError(f"{message} (see {parser.prog} --help)")

    parser.error = one_line
    return check_ranges(parser, parser.parse_args(argv))
