"""Machinery every sub-command shares, so they all behave the same for the person typing.

* Options on every command (added by ``persam.cli`` to each command's parser, so a new command
  gets them without doing anything): ``--no-progress`` and ``--threads N``.
* :func:`progress_bar`: a tqdm bar on stderr, shown only when stderr is a terminal.
* :class:`WarningPrinter`: Python warnings as one line each, ``persam CMD: warning: ...``,
  printed once, above any progress bar (via ``tqdm.write``).
* :func:`collect_inputs`: images of files and folders (folders are searched recursively), each
  mapped to an output path that mirrors the input folder structure under ``--out``.
* :func:`run_batch`: process every item, go on past a failing one, list the failures at the
  end (stderr, and ``OUT/failures.txt``) and return exit status 1 if anything failed.
* :func:`check_output_dir` / :func:`check_output_file`: refuse unusable ``--out`` / ``--save``
  before any work; nothing is created until the first result is written.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from persam_files import write_text

from ..inputs import InputError, InputImage, collect_inputs  # noqa: F401 - the commands' names for them

FAILURES_FILE = "failures.txt"

# -- options every command has ---------------------------------------------------------------


def _number(convert: Callable[[str], Any], what: str, allowed: Callable[[Any], bool], rule: str,
            doc: str) -> Callable[[str], Any]:
    """An argparse type: ``convert(text)`` ("expected WHAT" if it fails) that ``allowed`` accepts
    (else ``rule``, with {text} for the text given)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not allowed(value):
            raise argparse.ArgumentTypeError(rule.format(text=text))
        return value
    parse.__doc__ = doc
    return parse


positive_int = _number(int, "a whole number", lambda value: value >= 1, "must be at least 1, got {text}",
                       "argparse type for counts (threads, steps, instances, batch sizes): a whole number >= 1.")
non_negative_int = _number(int, "a whole number", lambda value: value >= 0, "must be 0 or more, got {text}",
                           'argparse type for counts where 0 means "all" or "off": a whole number >= 0.')
threshold_value = _number(float, "a number", lambda value: not math.isnan(value), "must be a number, not NaN",
                          "argparse type for a score threshold: a number (``inf``: never present), not NaN.")
non_negative_float = _number(float, "a number", lambda value: 0 <= value < math.inf,
                             "must be a finite number >= 0, got {text}",
                             "argparse type for amounts such as CPUs or GPUs per worker: a finite number >= 0.")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-progress``, ``--threads`` and ``--debug`` unless the parser already has them (idempotent),
    and remember the parser's name ("persam eval perseg") for messages."""
    options = parser._option_string_actions  # argparse has no public "has option" query
    if "--no-progress" not in options:
        parser.add_argument("--no-progress", action="store_true",
                            help="no progress bar (bars are only drawn when stderr is a terminal)")
    if "--threads" not in options:
        parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                            help="CPU threads torch may use (default: torch uses every core)")
    if "--debug" not in options:
        # Also after the command (``persam segment ... --debug``); SUPPRESS: when not given here,
        # the sub-command must not overwrite a ``persam --debug segment`` with its default.
        parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                            help="show full tracebacks on errors (also allowed before the command)")
    parser.set_defaults(command_label=parser.prog)


def add_common_args_everywhere(subparsers: argparse._SubParsersAction) -> None:
    """:func:`add_common_args` on every leaf command (``eval perseg``, not ``eval``)."""
    for parser in set(subparsers.choices.values()):
        nested = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
        if nested:
            for action in nested:
                add_common_args_everywhere(action)
        else:
            add_common_args(parser)


def apply_common_args(args: argparse.Namespace) -> None:
    """Act on the options of :func:`add_common_args` before the command runs."""
    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)


def command_label(args: argparse.Namespace | None) -> str:
    return getattr(args, "command_label", None) or "persam"


def show_progress(args: argparse.Namespace) -> bool:
    """For code that takes a ``progress`` flag: bars unless --no-progress or stderr is not a
    terminal."""
    return not getattr(args, "no_progress", False) and sys.stderr.isatty()


def progress_bar(args: argparse.Namespace, iterable: Iterable | None = None, **kwargs):
    """A tqdm bar on stderr; off with --no-progress, and when stderr is not a terminal (logs,
    pipes), so captured output holds results and messages only."""
    from tqdm import tqdm

    disable = True if getattr(args, "no_progress", False) else None  # None: tqdm's "off unless a tty"
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=disable, file=sys.stderr, **kwargs)


def say(line: str) -> None:
    """One line on stderr, above any progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


# -- warnings ----------------------------------------------------------------------------------

_TORCH_ORIGIN = re.compile(r"\s*\(Triggered internally at [^)]*\)\.?")


def one_line(text: str) -> str:
    """First line of a message, without torch's "(Triggered internally at file:line)" suffix."""
    text = _TORCH_ORIGIN.sub("", str(text)).strip()
    return text.splitlines()[0].strip() if text else ""


class WarningPrinter:
    """A ``warnings.showwarning`` replacement: ``persam CMD: warning: MESSAGE``, each message
    once per run, written above the progress bar. No file:line and no source line, which mean
    nothing to someone running the command."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.seen: set[str] = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = one_line(message) or category.__name__
        if text in self.seen:
            return
        self.seen.add(text)
        say(f"{self.label}: warning: {text}")


# -- outputs -----------------------------------------------------------------------------------


class OutputError(ValueError):
    """An output path that cannot be used (one line, naming the option and the path)."""


def check_output_dir(path: str | os.PathLike, flag: str = "--out",
                     inputs: Iterable[tuple[str, str | os.PathLike | None]] = ()) -> Path:
    """``path`` as an output folder: it may exist (as a folder) or not; it is not created here,
    the first file written creates it (so a run that fails its checks leaves nothing behind).
    ``inputs``: (flag, folder) pairs of input folders (e.g. ``("--data", ...)``) the output
    folder may not be, nor lie inside: the results would overwrite or mix with them."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{flag} {path} is an existing file, not a folder; give a folder name "
                          "(it is created when the first result is written)")
    resolved = path.resolve()
    for input_flag, folder in inputs:
        if folder is not None and Path(folder).is_dir() and resolved.is_relative_to(Path(folder).resolve()):
            where = "is" if resolved == Path(folder).resolve() else "is inside"
            raise OutputError(f"{flag} {path} {where} {input_flag} {folder}; the results would overwrite "
                              "or mix with your input files: choose an output folder outside it")
    _check_writable(path, flag)
    return path


def check_output_file(path: str | os.PathLike, flag: str = "--save",
                      inputs: Iterable[tuple[str, str | os.PathLike | None]] = ()) -> Path:
    """``path`` as an output file: a folder there is refused, an existing file is replaced,
    unless it is one of ``inputs`` ((flag, file) pairs, e.g. ``("--ref-image", ...)``)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give a file name")
    for input_flag, source in inputs:
        if source is not None and Path(source).exists() and path.resolve() == Path(source).resolve():
            raise OutputError(f"{flag} {path} is the {input_flag} file; writing there would replace "
                              "your input: give another file name")
    _check_writable(path.parent, flag, shown=path)
    return path


def _check_writable(folder: Path, flag: str, shown: Path | None = None) -> None:
    """The nearest existing folder of ``folder`` (itself included) must take a new file.
    Tried for real with a probe file, removed at once: permission bits say nothing for root
    or on read-only or special file systems (/proc)."""
    shown = shown or folder
    for existing in (folder, *folder.parents):
        if not existing.exists():
            continue
        if not existing.is_dir():
            raise OutputError(f"{flag} {shown}: {existing} is a file, so no folder can be made there")
        try:
            handle, probe = tempfile.mkstemp(prefix=".persam-probe-", dir=existing)
        except OSError as exc:
            reason = (exc.strerror or str(exc)).lower()
            raise OutputError(f"{flag} {shown}: cannot write in {existing} ({reason})") from None
        os.close(handle)
        os.unlink(probe)
        return


# -- batches -----------------------------------------------------------------------------------


@dataclass
class Failure:
    item: str
    reason: str

    def line(self) -> str:
        return self.reason if self.item in self.reason else f"{self.item}: {self.reason}"


@dataclass
class BatchResult:
    done: int = 0
    failures: list[Failure] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return 1 if self.failures else 0


def exception_line(exc: BaseException) -> str:
    """The one line a user sees for an exception: its message, or for an operating-system
    error "no space left on device: PATH" instead of "[Errno 28] No space left on device: ..."."""
    if isinstance(exc, OSError) and exc.strerror and type(exc).__str__ is OSError.__str__:
        reason = exc.strerror[0].lower() + exc.strerror[1:]
        return f"{reason}: {exc.filename}" if exc.filename else reason
    return one_line(str(exc)) or type(exc).__name__


def is_fatal(exc: Exception) -> bool:
    """Errors that would fail every later item too (writing outputs: disk full, permissions;
    memory), so the batch stops instead of listing the same failure for every item."""
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError))


def run_batch(items: Sequence[Any], process: Callable[[Any], Any], args: argparse.Namespace, *,
              describe: Callable[[Any], str] = str, failures_file: str | os.PathLike | None = None,
              **bar_kwargs) -> BatchResult:
    """``process(item)`` for every item under a progress bar, going on past failures.

    A failing item's one-line reason is kept; after the loop each failure is printed on stderr
    as ``persam CMD: error: <reason naming the item>`` and, when ``failures_file`` is given, the
    same lines are written there (a stale file of an earlier run is removed when nothing
    failed). With --debug the first failure raises with its traceback. Errors that would fail
    every item (see :func:`is_fatal`) stop the batch at once.
    """
    result = BatchResult()
    with progress_bar(args, total=len(items), **bar_kwargs) as bar:
        for item in items:
            try:
                process(item)
                result.done += 1
            except Exception as exc:
                if getattr(args, "debug", False) or is_fatal(exc):
                    raise
                result.failures.append(Failure(describe(item), exception_line(exc)))
            bar.update(1)
    report_failures(args, result.failures, failures_file)
    return result


def report_failures(args: argparse.Namespace, failures: Sequence[Failure],
                    failures_file: str | os.PathLike | None = None) -> None:
    label = command_label(args)
    for failure in failures:
        say(f"{label}: error: {failure.line()}")
    if failures_file is None:
        return
    failures_file = Path(failures_file)
    if failures:
        write_text(failures_file, "".join(f"{failure.line()}\n" for failure in failures))
    else:
        failures_file.unlink(missing_ok=True)


# -- wording -----------------------------------------------------------------------------------


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 mask``, ``2 masks``, ``0 masks``."""
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"


class DefaultValue:
    """Marks an option's default, so a command can tell "--method persam" typed by the user
    from the default (``isinstance(args.method, DefaultValue)``) while it still compares and
    prints as the plain value."""


class DefaultStr(str, DefaultValue):
    pass


class DefaultInt(int, DefaultValue):
    pass


def given(value: object) -> bool:
    """True if the option was typed on the command line (not its default)."""
    return value is not None and not isinstance(value, DefaultValue)
