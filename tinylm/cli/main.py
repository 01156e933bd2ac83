"""The ``tinylm`` command.

* ``fit | validate | test`` — LightningCLI: the LightningModule is chosen by ``class_path`` (``LanguageModel``
  by default), the ``TextDataModule`` is shared; ``--config recipe.yaml`` plus dotted overrides.
* everything else — a typed function whose signature is its CLI (jsonargparse), with the same
  ``--config`` / override style. ``COMMANDS`` maps command words to ``module:function``; a group is imported
  only when its command runs, so ``tinylm --help`` stays fast.

Bad input anywhere ends in one line on stderr (``tinylm: error: ...``) and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

from tinylm.errors import TinyLMError

LIGHTNING_COMMANDS = ("fit", "validate", "test")

COMMANDS: dict[str, str | dict[str, str]] = {
    "tokenizer": {
        "train": "tinylm.cli.tokenizer:train_command",
        "count": "tinylm.cli.tokenizer:count_command",
        "compact": "tinylm.cli.tokenizer:compact_command",
        "remap": "tinylm.cli.tokenizer:remap_command",
        "coverage": "tinylm.cli.tokenizer:coverage_command",
    },
    "data": {
        "prepare": "tinylm.cli.data:prepare_command",
    },
    "inherit": "tinylm.cli.inherit:inherit",
    "convert": "tinylm.cli.convert:convert_command",
    "eval": "tinylm.evaluation.command:evaluate",
    "pro": "tinylm.pro:pro",
}


def _load(target: str):
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _usage() -> str:
    words = list(LIGHTNING_COMMANDS) + [
        f"{group} {{{','.join(sub)}}}" if isinstance(sub, dict) else group for group, sub in COMMANDS.items()
    ]
    return "usage: tinylm {" + " | ".join(words) + "} [--help]"


def run_lightning(args: list[str] | None) -> None:
    # torch and Lightning load here, not at import: `tinylm --help` and the file commands stay fast
    from tinylm.data.datamodule import TextDataModule
    from tinylm.training.lm import LanguageModel
    from tinylm.training.runs import RunCLI

    RunCLI(
        LanguageModel,
        TextDataModule,
        subclass_mode_model=True,
        seed_everything_default=1234,
        save_config_kwargs={"overwrite": True},
        args=args,
        parser_kwargs={"default_env": False, "exit_on_error": False},
    )


def run_function(args: list[str]) -> None:
    from jsonargparse import CLI

    entry = COMMANDS.get(args[0])
    if entry is None:
        raise TinyLMError(f"unknown command {args[0]!r}; {_usage()}")
    target = {name: _load(t) for name, t in entry.items()} if isinstance(entry, dict) else _load(entry)
    function = target.get(args[1]) if isinstance(target, dict) and len(args) > 1 else target
    rest = bare_flags_true(args[1:], function) if callable(function) else args[1:]
    CLI(target, args=rest, as_positional=False, exit_on_error=False)


def bare_flags_true(args: list[str], function) -> list[str]:
    """``--overwrite`` alone means ``--overwrite true`` (jsonargparse wants a value for every bool)."""
    import inspect

    flags = {f"--{name}" for name, p in inspect.signature(function).parameters.items() if p.annotation in (bool, "bool")}
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg in flags and (i + 1 == len(args) or args[i + 1].startswith("--")):
            out.append("true")
    return out


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return
    try:
        if args[0] in LIGHTNING_COMMANDS:
            run_lightning(argv)  # None: LightningCLI reads sys.argv itself
        else:
            run_function(args)
    except SystemExit as stop:  # tinylm.training.runs.Stopped: a signal ended the run after saving (exit 143)
        if getattr(stop, "message", None):
            print(f"tinylm: {stop.message}", file=sys.stderr)
        raise
    except Exception as err:  # noqa: BLE001 — report bad input in one line, re-raise real bugs
        message = user_error(err)
        if message is None:
            raise
        print(f"tinylm: error: {message}", file=sys.stderr)
        sys.exit(2)


def user_error(err: BaseException) -> str | None:
    """The one-line message for bad input: a TinyLMError anywhere in the chain, or an argument-parsing error."""
    from jsonargparse import ArgumentError

    seen, cause = set(), err
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, TinyLMError):
            return str(cause)
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, ArgumentError):
        detail = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        return f"{detail[:400]} (see --help)"
    return None


if __name__ == "__main__":
    main()
