"""The one base of every error logclass raises on purpose.

The CLI prints a ``LogclassError`` as one line and exits 2; anything else is a bug and crashes
with its traceback. So raise a subclass for a condition the user can fix (a flag, a setting, an
input file, a bundle, a busy port) and let a builtin exception mean "logclass is wrong".

This module imports nothing of the project: every layer may import it.
"""

from __future__ import annotations


class LogclassError(Exception):
    """A condition the user can fix. The message names the fix: the flag, setting or file to
    change and how, e.g. ``"relay.buffer.path /x: Permission denied; give a writable directory"``."""
