"""Typer options generated from TrainConfig's fields: one declaration per option.

Each field becomes `--field-name` with its `Field(description=…)` as help, its default, and its
`Literal` values as choices; `X | None` fields default to None, `list[int]` seeds take text ("0-7").
`config_command` wraps a function so that typer sees these options (plus the command's own) and
the function receives them as keyword arguments.
"""
from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Callable, Literal, Optional

import typer

from ..config import TrainConfig

SHORT_FLAGS = {"width": "-K"}


def _option_type(annotation) -> tuple[Any, bool]:
    """(type typer should parse, whether the field may be None) for a field annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) == 1:
            return _option_type(args[0])[0], optional
        return str, optional          # float | str (train_ratio): the validator parses the text
    if origin is list:
        return str, False             # seeds: "0-7", "0,3,5" (TrainConfig's validator parses it)
    if origin is Literal or annotation in (str, int, float, bool):
        return annotation, False
    raise TypeError(f"TrainConfig field type {annotation!r} has no command-line form: add one in {__name__}")


def config_parameters(names: typing.Iterable[str] | None = None, defaults: dict | None = None
                      ) -> list[inspect.Parameter]:
    """One typer option per TrainConfig field (all of them, or `names`), defaults overridable."""
    defaults = defaults or {}
    params = []
    for name, field in TrainConfig.model_fields.items():
        if names is not None and name not in names:
            continue
        kind, optional = _option_type(field.annotation)
        if name in defaults:
            default = defaults[name]
        elif typing.get_origin(field.annotation) is list:
            default = None           # seeds: absent unless given (--seed is the common case)
        else:
            default = field.get_default(call_default_factory=True)
            if kind is str and default is not None and not isinstance(default, str):
                default = str(default)
        decls = [f"--{name.replace('_', '-')}"] + ([SHORT_FLAGS[name]] if name in SHORT_FLAGS else [])
        if kind is bool:
            decls = [f"--{name.replace('_', '-')}/--no-{name.replace('_', '-')}"]
        annotation = Optional[kind] if (optional or default is None) else kind
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                        default=typer.Option(default, *decls, help=field.description)))
    return params


def config_command(function: Callable, parameters: list[inspect.Parameter]) -> Callable:
    """`function(ctx, **options)` presented to typer with exactly `parameters` after the context."""
    def command(ctx: typer.Context, **options):
        return function(ctx, **options)

    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    command.__signature__ = inspect.Signature([ctx_param, *parameters])
    command.__annotations__ = {"ctx": typer.Context, **{p.name: p.annotation for p in parameters}}
    command.__doc__ = function.__doc__
    command.__name__ = function.__name__
    return command


def given_on_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"
