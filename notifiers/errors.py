"""Delivery errors, drawn once. Retryability belongs to the error.

    NotifierError                  base: one line fit for a user (the engine's CLI and HTTP
    │                              server show it as they show their own errors)
    ├── ChannelConfigError         the channel is not configured, or badly (names the variable)
    └── DeliveryError              the provider did not take the message
        ├── TransientError         try again later: connection, timeout, SMTP 4xx, HTTP 429/5xx;
        │   │                      `retry_after` seconds when the provider said so
        │   ├── AmbiguousError     the whole message went out and no answer came back (the
        │   │                      connection dropped, or the answer came too late): the
        │   │                      provider may have it, so the next try counts as a resend
        │   └── DeferredError      nothing went out: the channel held it back (its host has as
        │                          many sends in flight as it may take); run again after
        │                          `retry_after`, and that run keeps this try's number
        └── PermanentError         never retry: SMTP 5xx, invalid number, unsubscribed,
                                   push subscription gone (`gone=True`); `code` is the provider's

Messages carry the provider's code and reason, never a secret.
"""

from __future__ import annotations


class NotifierError(Exception):
    """Base of every channel error; `str()` is the one-line message. A library of its own:
    it derives from nothing of the engine."""


class ChannelConfigError(NotifierError):
    pass


class DeliveryError(NotifierError):
    def __init__(self, reason: str, *, code: str | int | None = None) -> None:
        super().__init__(reason if code is None else f"{reason} (code {code})")
        self.reason = reason
        self.code = None if code is None else str(code)


class TransientError(DeliveryError):
    def __init__(
        self, reason: str, *, code: str | int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, code=code)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    def __init__(self, reason: str, *, code: str | int | None = None, gone: bool = False) -> None:
        super().__init__(reason, code=code)
        self.gone = gone  # the address no longer exists (a push subscription answered 404/410)


class AmbiguousError(TransientError):
    """Retried like any transient error; the ledger counts the retry's send as a resend."""


class DeferredError(TransientError):
    """Not tried at all, so not counted as a try: a host's sends are all in use, and this
    one waits its turn in the delivery schedule rather than on a thread."""
