"""What reading an lvs.cf file reports: problems at a file and line, and the parse result."""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.model import ConfigError, LvsConfig, Path

__all__ = ["ConfigError", "ConfigProblem", "ParseResult"]


@dataclass(frozen=True, order=True)
class ConfigProblem:
    """One error or warning; str() is `FILE:LINE: message`."""

    filename: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}: {self.message}"


@dataclass(frozen=True)
class ParseResult:
    """The model (None if there was any error), every error, every warning, and the line of
    each block and directive by model path (e.g. ``("virtuals", 0, "address")``)."""

    config: LvsConfig | None
    errors: list[ConfigProblem] = field(default_factory=list)
    warnings: list[ConfigProblem] = field(default_factory=list)
    lines: dict[Path, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """True when there were no errors (warnings allowed)."""
        return not self.errors
