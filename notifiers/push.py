"""The Web Push channel (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID).

The message goes to the push service named by the subscription's endpoint,
encrypted (aes128gcm) for the browser that made the subscription and signed
with our VAPID key, so the push service knows who sends and the browser's
service worker alone can read it. The push service's HTTP status decides
everything, read as every HTTP channel reads it (notifiers.http), with one
case of push's own: 404/410 mean the subscription is gone for good (the
delivery flow then forgets it); 408, 429 and 5xx are worth another try, after
the Retry-After asked for; any other refusal is final. pywebpush and its
dependencies load only when the channel is built.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from notifiers.base import Delivery, Message, Notifier, Secret, secret
from notifiers.errors import ChannelConfigError, PermanentError, TransientError
from notifiers.http import Verdict, retry_after, verdict

if TYPE_CHECKING:
    import requests

DEFAULT_TTL = 86400  # seconds the push service keeps a message for an offline browser
DEFAULT_TIMEOUT = 10.0
# RFC 8291 section 4: a push message body is at most 4096 octets; aes128gcm adds a
# 86-octet header (salt, record size, key id), a 16-octet tag and a 1-octet delimiter.
MAX_PLAINTEXT = 4096 - 86 - 16 - 1
ELLIPSIS = "…"
GONE = frozenset({404, 410})  # the subscription expired or was withdrawn (RFC 8030 8.3)


class PushNotifier(Notifier):
    channel = "push"

    def __init__(self, vapid: Any, subject: str, ttl: int, timeout: float) -> None:
        self._vapid = vapid  # a py_vapid.Vapid02 holding the private key; never shown
        self.subject = subject
        self.ttl = ttl
        self.timeout = timeout
        self._session: requests.Session | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PushNotifier:
        raw = secret(env, "VAPID_PRIVATE_KEY")
        if not raw:
            raise ChannelConfigError("VAPID_PRIVATE_KEY (or VAPID_PRIVATE_KEY_FILE) is not set")
        if not env.get("VAPID_SUBJECT", "").strip():
            raise ChannelConfigError("VAPID_SUBJECT is not set (a mailto: or https: URL)")
        _require_pywebpush()  # only once the channel is configured: a stand-in loads nothing
        vapid = load_vapid_key(Secret(raw))
        subject = env.get("VAPID_SUBJECT", "").strip()
        if not subject.startswith(("mailto:", "https://")):
            raise ChannelConfigError(
                f"VAPID_SUBJECT must be a mailto: or https: URL, not {subject!r}"
            )
        try:  # a trial signature: py_vapid's own checks of the subject run now, not per send
            vapid.sign(
                {"sub": subject, "aud": "https://push.example", "exp": int(time.time()) + 60}
            )
        except Exception:
            raise ChannelConfigError(
                f"VAPID_SUBJECT {subject!r} is refused by py_vapid "
                "(mailto:someone@example.com or https://example.com)"
            ) from None
        ttl = _number(env, "PUSH_TTL", DEFAULT_TTL, int, minimum=0)
        timeout = _number(env, "PUSH_TIMEOUT", DEFAULT_TIMEOUT, float, minimum=0.001)
        return cls(vapid, subject, int(ttl), float(timeout))

    @property
    def public_key(self) -> str:
        """The VAPID public key, base64url: what browsers pass as applicationServerKey."""
        from cryptography.hazmat.primitives import serialization

        point = self._vapid.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return base64.urlsafe_b64encode(point).rstrip(b"=").decode()

    def __repr__(self) -> str:
        return (
            f"PushNotifier(subject={self.subject!r}, public_key={self.public_key!r}, "
            f"ttl={self.ttl}, timeout={self.timeout})"
        )

    def send(self, message: Message) -> Delivery:
        import requests
        from py_vapid import VapidException  # type: ignore[import-untyped]
        from pywebpush import WebPushException, webpush  # type: ignore[import-untyped]

        subscription = check_subscription(message.push_subscription)
        endpoint = str(subscription["endpoint"])
        origin = _origin(endpoint)
        data, truncated = fit_payload(message.subject, message.body, message.key)
        try:
            response = webpush(
                subscription,
                data=data,
                vapid_private_key=self._vapid,
                vapid_claims={"sub": self.subject},  # pywebpush adds aud (the origin) and exp
                content_encoding="aes128gcm",
                timeout=self.timeout,
                ttl=self.ttl,
                headers={"Topic": topic(message.key)},
                requests_session=self.session(),
            )
        except WebPushException as exc:
            if exc.response is None:
                raise PermanentError(f"push to {origin} refused: {exc.message}") from None
            response = exc.response
        except requests.TooManyRedirects as exc:
            status = exc.response.status_code if exc.response is not None else None
            raise PermanentError(f"push service {origin} redirected", code=status) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(
                f"cannot reach push service {origin}: {type(exc).__name__}"
            ) from None
        except requests.RequestException as exc:
            raise PermanentError(f"push to {origin} failed: {type(exc).__name__}") from None
        except VapidException:
            raise PermanentError(f"cannot sign a VAPID token for {origin}") from None
        warnings = ("push body truncated to fit the 4 KB push payload",) if truncated else ()
        return classify(response, origin, endpoint, message.key, warnings)

    def session(self) -> requests.Session:
        """One HTTP session per notifier, so connections to a push service are reused."""
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.max_redirects = 0  # an endpoint is an address, never a redirect
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def _require_pywebpush() -> None:
    try:
        import pywebpush  # noqa: F401
    except ImportError as exc:
        raise ChannelConfigError(
            f"channel push needs a package that is not installed ({exc.name}): "
            "pip install 'orchestrator[push]'"
        ) from None


def load_vapid_key(raw: Secret) -> Any:
    """A py_vapid key from PEM, or base64url raw (32 octets) or DER; the error never quotes it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from py_vapid import Vapid

    text = raw.strip().replace("\\n", "\n")  # a PEM pasted into one line of a .env file
    try:
        if "-----BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode(), password=None)
            vapid = Vapid(private_key=key)
        else:
            vapid = Vapid.from_string(private_key=text)
    except Exception:  # binascii, cryptography and py_vapid errors alike; none is shown
        raise ChannelConfigError(
            "VAPID_PRIVATE_KEY is not a valid private key "
            "(PEM, or base64url of the raw 32-octet P-256 key or of its DER)"
        ) from None
    private = vapid.private_key
    if not isinstance(private, ec.EllipticCurvePrivateKey) or private.curve.name != "secp256r1":
        raise ChannelConfigError("VAPID_PRIVATE_KEY must be a P-256 (prime256v1) EC key")
    return vapid


def check_subscription(subscription: dict[str, Any] | None) -> dict[str, Any]:
    """A subscription pywebpush can encrypt for, or a PermanentError saying what is wrong."""
    if not subscription:
        raise PermanentError("a push notification needs a push subscription")
    endpoint = subscription.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise PermanentError("the push subscription has no endpoint", code="subscription")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise PermanentError("the push endpoint is not an https URL", code="subscription")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        # RFC 8030 section 8: push services speak TLS; plain http only for a local test service
        raise PermanentError(f"push endpoint {_origin(endpoint)} is not https", code="subscription")
    keys = subscription.get("keys")
    if not isinstance(keys, dict):
        raise PermanentError("the push subscription has no keys", code="subscription")
    p256dh = _b64(keys.get("p256dh"))
    if p256dh is None or len(p256dh) != 65 or p256dh[0] != 4:
        raise PermanentError(
            "the push subscription's p256dh is not a P-256 public key", code="subscription"
        )
    auth = _b64(keys.get("auth"))
    if auth is None or len(auth) != 16:
        raise PermanentError(
            "the push subscription's auth secret is not 16 octets", code="subscription"
        )
    return {"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}}


def fit_payload(title: str, body: str, key: str) -> tuple[str, bool]:
    """The JSON payload, its body (then its title) cut to fit a push message; and whether cut."""

    def encoded(t: str, b: str) -> str:
        return json.dumps(
            {"title": t, "body": b, "key": key}, ensure_ascii=False, separators=(",", ":")
        )

    def fits(text: str) -> bool:
        return len(text.encode()) <= MAX_PLAINTEXT

    whole = encoded(title, body)
    if fits(whole):
        return whole, False
    if fits(encoded(title, ELLIPSIS)):
        n = _longest(len(body), lambda n: fits(encoded(title, body[:n] + ELLIPSIS)))
        return encoded(title, body[:n] + ELLIPSIS), True
    n = _longest(len(title), lambda n: fits(encoded(title[:n] + ELLIPSIS, "")))
    return encoded(title[:n] + ELLIPSIS, ""), True


def _longest(limit: int, ok: Any) -> int:
    """The largest n in [0, limit] with ok(n), ok being monotone and ok(0) true."""
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if ok(middle):
            low = middle
        else:
            high = middle - 1
    return low


def topic(key: str) -> str:
    """RFC 8030 Topic: a retry of the same notification replaces an undelivered copy."""
    digest = hashlib.sha256(key.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()[:32]


def classify(
    response: Any, origin: str, endpoint: str, key: str, warnings: tuple[str, ...] = ()
) -> Delivery:
    """The push service's answer as a Delivery, or the error it means (notifiers.http)."""
    status = int(response.status_code)
    phrase = f"{status} {response.reason or ''}".strip()
    found = verdict(status, gone=GONE)
    if found is Verdict.ACCEPTED:
        digest = hashlib.sha256(f"{endpoint} {key}".encode()).hexdigest()[:24]
        provider_id = response.headers.get("Location") or f"push-{digest}"
        return Delivery(provider_id=provider_id, accepted=(endpoint,), warnings=warnings)
    detail = _detail(response)
    if found is Verdict.GONE:
        raise PermanentError(
            f"push subscription gone ({phrase} from {origin})", code=status, gone=True
        )
    if found is Verdict.TRANSIENT:
        what = f"is rate limiting ({phrase})" if status == 429 else f"failed ({phrase}){detail}"
        raise TransientError(
            f"push service {origin} {what}",
            code=status,
            retry_after=retry_after(response.headers.get("Retry-After")),
        )
    why = {
        400: "bad request",
        401: "VAPID authorization missing",
        403: "VAPID authorization refused",
        413: "payload too large",
    }.get(status, "redirected" if found is Verdict.REDIRECTED else "refused")
    raise PermanentError(f"push service {origin}: {why} ({phrase}){detail}", code=status)


def _detail(response: Any) -> str:
    """The first 200 characters of the push service's explanation, on one line."""
    text = " ".join(str(response.text or "").split())
    return f": {text[:200]}" if text else ""


def _origin(endpoint: str) -> str:
    """scheme://host[:port] of an endpoint: where errors point, without the subscription path."""
    parts = urlsplit(endpoint)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _b64(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return None


def _number(
    env: Mapping[str, str], name: str, default: float, kind: type[int] | type[float], minimum: float
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ChannelConfigError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise ChannelConfigError(f"{name} must be at least {minimum}, not {raw!r}")
    return value
