"""keepalived.conf import: ``convert(files) -> Result`` (lvs.cf text, or FILE:LINE errors)."""

from .convert import Result, convert

__all__ = ["Result", "convert"]
