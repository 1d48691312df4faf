"""What every lvsctl command shares: the context object, one-line failures, running async code."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from ..actions import ActionError
from ..etcd.client import Etcd, EtcdAuthError, EtcdUnavailable
from ..etcd.settings import EtcdSettings, SettingsError, settings_from
from ..keys import Keys
from ..model import ConfigError
from ..store import PushRefused, StoredConfigError

T = TypeVar("T")


class Failure(click.ClickException):
    """An error for the operator: printed as one line (or several problems), exit status 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"lvsctl: {self.message}", err=True)


@dataclass
class Ctx:
    etcd_url: str | None
    cluster: str
    options: dict[str, Any]

    @functools.cached_property
    def settings(self) -> EtcdSettings:
        return settings_from(self.etcd_url, **self.options)

    @property
    def keys(self) -> Keys:
        return Keys(self.cluster)

    def connect(self) -> Etcd:
        return Etcd(self.settings)


_KNOWN = (EtcdUnavailable, EtcdAuthError, SettingsError, PushRefused, StoredConfigError,
          ConfigError, ActionError, ValueError)


def output_option(default: str = "text") -> Callable[[Callable[..., T]], Callable[..., T]]:
    """``-o/--output text|json``: every command that prints data can print it as JSON."""
    return click.option("-o", "--output", type=click.Choice([default, "json"]),
                        default=default, show_default=True,
                        help="json: the same data, for programs")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def run(coro_fn: Callable[..., Awaitable[T]]) -> Callable[..., T]:
    """Run an async command; known failures become one-line errors, never tracebacks."""

    @functools.wraps(coro_fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(coro_fn(*args, **kwargs))
        except _KNOWN as exc:
            raise Failure(str(exc)) from None
        except KeyboardInterrupt:
            raise click.Abort() from None

    return wrapper
