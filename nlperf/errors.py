"""Errors a user sees as one line, and the exit statuses pinned by the CLI contract."""

from __future__ import annotations

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class NlperfError(Exception):
    """A failure explained in one line; ``exit_code`` follows the CLI contract."""

    exit_code = EXIT_RUN_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadInput(NlperfError):
    """The user's input (scenario, flag, parameter) is wrong: exit 2."""

    exit_code = EXIT_BAD_INPUT


class RunFailed(NlperfError):
    """The lab could not do what was asked (VM, build, module, workload): exit 1."""

    exit_code = EXIT_RUN_FAILED
