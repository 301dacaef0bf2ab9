"""The command line before argparse reads it: QEMU's spellings, and what argparse misreads.

argparse alone turns several habits into misleading errors: `-serial stdio`
reads as `-s erial` (short options merge with what follows), `-machine q35`
as `-m achine`, an option of `pyvmm boot` given to `pyvmm memmap` as some
other option. `normalize_arguments` walks the arguments once, before argparse:

- an option of the command passes through with its value (never read as
  anything else); a bare `--trace` takes the next argument as its KINDS when it
  names exit kinds (`--trace io IMAGE`), else it traces every kind
  (`--trace IMAGE`);
- a QEMU option is accepted, translated or refused by its entry in
  `pyvmm.cli.qemu_options`;
- an option of another command, or an unknown one, is a one-line usage error.
"""

from __future__ import annotations

import os

from pyvmm.errors import UsageError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see pyvmm/__init__.py)
if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping, Sequence


class CommandOptions:
    """One command's option strings, each with whether it takes a value."""

    # Not a dataclass, for start-up time (tests/integration/test_startup_imports.py).
    __slots__ = ("builds_machine", "prog", "takes_value")

    def __init__(self, prog: str, takes_value: Mapping[str, bool], builds_machine: bool) -> None:
        self.prog = prog
        self.takes_value = takes_value
        self.builds_machine = builds_machine  # boot and memmap: QEMU's options mean something there

    @classmethod
    def of(cls, parser: argparse.ArgumentParser) -> CommandOptions:
        # argparse keeps its actions in a private list; option_strings and nargs are stable.
        takes_value = {
            option: action.nargs != 0
            for action in parser._actions
            for option in action.option_strings
        }
        return cls(parser.prog, takes_value, "-smp" in takes_value)


def normalize_arguments(
    commands: Mapping[str, argparse.ArgumentParser], arguments: Sequence[str]
) -> list[str]:
    """`arguments` (after `pyvmm`) as argparse should see them; UsageError for a hint."""
    arguments = list(arguments)
    position = next((i for i, item in enumerate(arguments) if not item.startswith("-")), None)
    if position is None or arguments[position] not in commands:
        _refuse_missing_command(arguments)
        return arguments
    command = arguments[position]
    others = {
        option: name
        for name, parser in commands.items()
        if name != command
        for option in CommandOptions.of(parser).takes_value
    }
    rest = _normalize_command(
        CommandOptions.of(commands[command]), others, arguments[position + 1 :]
    )
    return [*arguments[: position + 1], *rest]


def _refuse_missing_command(arguments: Sequence[str]) -> None:
    """`pyvmm -kernel x` or `pyvmm x.bin`: say that a command comes first."""
    from pyvmm.cli.qemu_options import QEMU_OPTIONS

    first = arguments[0] if arguments else ""
    if first in QEMU_OPTIONS or (not first.startswith("-") and os.path.isfile(first)):
        raise UsageError("pyvmm: a command comes first: pyvmm boot [OPTIONS] IMAGE")


def _normalize_command(
    command: CommandOptions, others: Mapping[str, str], arguments: Sequence[str]
) -> list[str]:
    result: list[str] = []
    index = 0
    while index < len(arguments):
        token = arguments[index]
        index += 1
        if token == "--":  # everything after it is positional
            result += arguments[index - 1 :]
            break
        if not _looks_like_option(token):
            result.append(token)
            continue
        name, equals, _ = token.partition("=") if token.startswith("--") else (token, "", "")
        if name in command.takes_value:
            if name == "--trace" and not equals:
                following = arguments[index] if index < len(arguments) else None
                if following is not None and _names_exit_kinds(following):
                    result.append(f"--trace={following}")
                    index += 1
                else:
                    result.append("--trace=all")
                continue
            result.append(token)
            if command.takes_value[name] and not equals and index < len(arguments):
                result.append(arguments[index])  # its value, whatever it looks like
                index += 1
            continue
        if name in others:
            raise UsageError(
                f"{command.prog}: {name} is an option of pyvmm {others[name]}, not of this "
                f"command (see {command.prog} --help)"
            )
        # The table of QEMU's options is imported for a token that may be one of them only.
        from pyvmm.cli.qemu_options import QEMU_OPTIONS, CommandContext

        qemu_name = token[1:] if token.startswith("--") else token
        entry = QEMU_OPTIONS.get(qemu_name) if command.builds_machine else None
        if entry is not None:
            context = CommandContext(command.prog, frozenset(command.takes_value))
            value = None
            if entry.value is not None:
                if index >= len(arguments):
                    if not entry.accepts + entry.becomes:  # refused whatever its value
                        entry.handle(qemu_name, None, context)
                    raise UsageError(f"{command.prog}: {qemu_name} expects {entry.value}")
                value = arguments[index]
                index += 1
            result += entry.handle(qemu_name, value, context)
            continue
        if token.startswith("--") or not _is_short_cluster(token, command.takes_value):
            raise UsageError(f"{command.prog}: unknown option {name} (see {command.prog} --help)")
        result.append(token)  # -vv, -m1G: argparse reads those right
    return result


def _looks_like_option(token: str) -> bool:
    # "-" alone and negative numbers ("-1") are values, as argparse takes them.
    if token.startswith("--"):
        return len(token) > 2
    return token[:1] == "-" and token[1:2].isalpha()


def _is_short_cluster(token: str, takes_value: Mapping[str, bool]) -> bool:
    """Whether argparse reads `token` as short options run together (`-vv`, `-vs`, `-m1G`).

    A short option that takes a value swallows the rest of the token; a rest
    that starts with a letter is a misspelt long option, not a value (`-mem-path`
    is not `-m em-path`: no value pyvmm takes starts with a letter there).
    """
    for offset, char in enumerate(token[1:], start=1):
        option = f"-{char}"
        if option not in takes_value:
            return False
        if takes_value[option]:
            return not token[offset + 1 : offset + 2].isalpha()
    return True


def _names_exit_kinds(text: str) -> bool:
    """Whether the argument after a bare --trace is its KINDS (`io`, `io,hlt`) or the image.

    It is KINDS when it names only exit kinds, or when some of it does and no such
    file exists (then --trace reports the misspelt kind, rather than a missing image).
    """
    from pyvmm.observe.trace import CATEGORIES

    names = {*CATEGORIES, "all"}
    parts = [part.strip() for part in text.split(",")]
    if all(part in names for part in parts):
        return True
    return any(part in names for part in parts) and not os.path.exists(text)
