"""Job configs from a JSON file plus command-line overrides: one ``--flag`` per scalar config field."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path

from ..config.base import HFConfig, read_json_config


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1")


def add_config_flags(parser: argparse.ArgumentParser, cls: type[HFConfig]) -> None:
    """``--config FILE`` and ``--<field>`` for every int/float/str/bool field of ``cls`` (nested configs and
    dicts are set in the file)."""
    parser.add_argument("--config", help=f"job config JSON (fields of {cls.__name__})")
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kinds = [t for t in (bool, int, float, str) if t is hints[field.name] or t in typing.get_args(hints[field.name])]
        if field.name != "extra" and kinds:
            parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=None,
                                type=_bool if kinds[0] is bool else kinds[0])


def config_from_args(cls: type[HFConfig], args: argparse.Namespace) -> HFConfig:
    """The file named by ``--config`` (if any) with the given flags laid over it, validated."""
    base = {}
    if args.config:
        base = read_json_config(Path(args.config), "job config (--config)", "check the path",
                                "fix the job config file")
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return cls.from_dict({**base, **overrides})


def job_main(cls: type[HFConfig], run: Callable[[HFConfig], object], doc: str, argv: list[str] | None = None) -> int:
    """A ``scripts/`` entry point: parse ``--config`` + flags of ``cls`` and run the job (one per msrun worker)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, cls)
    run(config_from_args(cls, parser.parse_args(argv)))
    return 0
