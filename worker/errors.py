"""The kinds of failure a command or the worker can end with, one exit code each.

Every error the CLI reports is one line, ``worker: error: <message>``, and the message
names what was wrong and where it came from (a field and its file or environment
variable; a queue or topic with its region and endpoint). The exit code says which kind of
failure it was, the same for every command (docs/configuration.md, "Exit codes"):

====  =====================================================================================
0     success
1     the command ran but part of its work failed (a message not sent or not moved); the
      worker stopped on a runtime error or a second signal
2     usage or configuration: a bad option, file, environment variable or handler module
3     not found: a queue, topic or dead-letter queue that does not exist
4     AWS refused: access denied, bad credentials, a request AWS rejects
5     unreachable: the endpoint did not answer within ``--timeout`` / ``startup_timeout``
6     refused as unsafe: a prune not confirmed, a non-empty DLQ without ``--force``
130   interrupted (Ctrl-C)
====  =====================================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_UNREACHABLE = 5
EXIT_UNSAFE = 6
EXIT_INTERRUPTED = 130


class WorkerError(Exception):
    """A failure with a one-line message fit for an operator, and its exit code."""

    exit_code = EXIT_FAILED


class ConfigError(WorkerError):
    """The configuration (file, environment, options) is invalid; the message names the
    field and where its value came from."""

    exit_code = EXIT_USAGE


class NotFoundError(WorkerError):
    """A queue, topic or DLQ does not exist where it was looked for."""

    exit_code = EXIT_NOT_FOUND


class RefusedError(WorkerError):
    """AWS refused the request (access denied, invalid credentials or parameters)."""

    exit_code = EXIT_REFUSED


class UnreachableError(WorkerError):
    """The endpoint did not answer in time."""

    exit_code = EXIT_UNREACHABLE


class UnsafeError(WorkerError):
    """An operation that would lose data or state was not confirmed."""

    exit_code = EXIT_UNSAFE
