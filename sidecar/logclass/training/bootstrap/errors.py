"""The one error `logclass bootstrap` raises on purpose."""

from __future__ import annotations

from logclass.errors import LogclassError


class BootstrapError(LogclassError):
    """Input, labels, review or answers file that bootstrap cannot use; the message names the
    file (and row) and the fix."""
