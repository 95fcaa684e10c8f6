"""What a route asks of its connections: proxy, TLS, connection limits, HTTP/2.

The route resolves these once (`NetworkOptions`) and hands them to its transport's
factory, so every transport gets the same proxy, the same `ssl.SSLContext` and the same
limits. A transport registers the `FEATURES` it honours; the client refuses, when it is
made, a setting the chosen transport cannot honour, instead of ignoring it.

Proxies come from the settings, or else from the standard environment variables
(``https_proxy``, ``http_proxy``, ``all_proxy`` and ``no_proxy``, either case), read the
way Python's ``urllib.request`` reads them, as httpx, requests and aiohttp do.
"""

from __future__ import annotations

import importlib.util
import os
import ssl
import urllib.parse
from typing import TYPE_CHECKING

import attrs

from ..errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "FEATURES",
    "KEEPALIVE_EXPIRY",
    "PROXY_SCHEMES",
    "ClientCertificate",
    "NetworkOptions",
    "proxy_feature",
    "proxy_for",
    "redact_url",
    "require",
    "ssl_context",
]

# The features a transport can honour, with the setting each one serves.
FEATURES: Mapping[str, str] = {
    "proxy": "an http:// proxy",
    "https_proxy": "an https:// proxy (TLS to the proxy)",
    "socks_proxy": "a socks5:// or socks5h:// proxy",
    "tls": "verify = false, a CA file, or a client certificate",
    "max_connections": "max_connections",
    "keepalive_expiry": "keepalive_expiry",
    "http2": "http2 = true",
    "write_timeout": "timeout.write other than the default",
    "pool_timeout": "timeout.pool",
}
# Seconds an idle connection is kept by default: httpx2's default, used by every built-in
# transport (aiohttp's own is 15).
KEEPALIVE_EXPIRY = 5.0
# Proxy URL scheme -> the feature it needs.
PROXY_SCHEMES: Mapping[str, str] = {
    "http": "proxy",
    "https": "https_proxy",
    "socks5": "socks_proxy",
    "socks5h": "socks_proxy",
}


def redact_url(url: str | None) -> str:
    """``url`` with its user and password (a proxy's credentials) hidden; plain string
    work, so that a URL too broken to parse is redacted too."""
    if url is None:
        return "None"
    scheme, separator, rest = url.partition("://")
    at = rest.rfind("@")  # a password may hold a "/"; a proxy URL has no path
    if at < 0:
        return url
    return f"{scheme}{separator}****{rest[at:]}"


def proxy_feature(url: str) -> str | None:
    """The feature a proxy URL needs, or None for a scheme no transport supports."""
    return PROXY_SCHEMES.get(urllib.parse.urlsplit(url).scheme.lower())


@attrs.frozen(kw_only=True)
class ClientCertificate:
    """A TLS client certificate.

    Attributes:
        certfile: PEM file with the certificate (and the key, when ``keyfile`` is None).
        keyfile: PEM file with the private key.
        password_env: the environment variable holding the key's password, if any.
    """

    certfile: str
    keyfile: str | None = None
    password_env: str | None = None


@attrs.frozen(kw_only=True)
class NetworkOptions:
    """The connection settings of one route, resolved; a transport factory's argument.

    Attributes:
        proxy: the proxy URL, credentials included (hidden in repr), or None to connect
            directly.
        ssl: the TLS context for https:// (the provider's and an https:// proxy's);
            None when the route needs no TLS.
        max_connections: connections open at most; None for the transport's default.
        keepalive_expiry: seconds an idle connection is kept; None for the default.
        http2: negotiate HTTP/2.
        features: the `FEATURES` the route's settings need (an explicit write or
            pool timeout among them), for a transport that picks its client by them.
    """

    proxy: str | None = attrs.field(default=None, repr=redact_url)
    ssl: ssl.SSLContext | None = attrs.field(default=None, eq=False)
    max_connections: int | None = None
    keepalive_expiry: float | None = None
    http2: bool = False
    features: frozenset[str] = frozenset()


def require(module: str, install: str, setting: str) -> None:
    """Refuse ``setting`` when ``module``, which it needs, is not installed: raise a
    `ConfigError` naming the package and what to install (the module is looked up, not
    imported).

    Arguments:
        module: the import name to look for, e.g. ``"socksio"``.
        install: what ``pip install`` takes for it, e.g. ``"httpx[socks]"`` or
            ``"httpx==0.28.*"``.
        setting: what needs it, which starts the message, e.g. ``"a socks5:// proxy
            with the httpx028 transport"``.

    Example::

        require("socksio", "httpx[socks]", "a socks5:// proxy with the httpx028 transport")
        # ConfigError: a socks5:// proxy with the httpx028 transport needs the socksio
        # package: pip install 'httpx[socks]'
    """
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{setting} needs the {module} package: pip install '{install}'")


def proxy_for(url: str, setting: str | bool | None) -> tuple[str | None, str | None]:
    """The proxy for requests to ``url``, and where it came from.

    ``setting`` is a proxy URL, False for none, or None/True for the environment's
    (``https_proxy`` for https:// URLs, ``http_proxy`` for http://, else ``all_proxy``;
    none for a host that ``no_proxy`` names). The source is None for the setting, or the
    environment variable's name.
    """
    if setting is False:
        return None, None
    if isinstance(setting, str):
        return setting, None
    import urllib.request  # not at the top: it costs 10 ms to import

    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    # proxy_bypass_environment: in CPython's urllib.request, not in its type stubs.
    if not proxies or urllib.request.proxy_bypass_environment(parts.netloc, proxies):  # type: ignore[attr-defined]
        return None, None
    for scheme in (parts.scheme, "all"):
        found = proxies.get(scheme)
        if found:
            if "://" not in found:  # "proxy.corp:3128", as curl allows
                found = "http://" + found
            head, _, tail = found.partition("://")
            return f"{head.lower()}://{tail}", f"{scheme}_proxy"
    return None, None


def ssl_context(verify: bool | str, cert: ClientCertificate | None) -> ssl.SSLContext:
    """The TLS context of a route.

    ``verify``: True for the system's trust store (as httpx2 builds it: truststore, or
    ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set), False for no verification, or the path
    of a CA bundle file or directory. ``cert``: a client certificate to present.
    """
    try:
        if verify is True:
            import httpx2

            context = httpx2.create_ssl_context(verify=True, trust_env=True)
        elif verify is False:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif os.path.isdir(verify):
            context = ssl.create_default_context(capath=verify)
        else:
            context = ssl.create_default_context(cafile=verify)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"verify: cannot load the CA certificates of {verify!r}: {exc}") from None
    if cert is not None:
        password = None
        if cert.password_env:
            password = os.environ.get(cert.password_env)
            if password is None:  # OpenSSL would ask for it on the terminal
                raise ConfigError(f"cert.password_env: the variable {cert.password_env} is not set")
        try:
            context.load_cert_chain(cert.certfile, cert.keyfile, password)
        except (OSError, ssl.SSLError) as exc:
            # The message of a wrong password names no password.
            raise ConfigError(f"cert: cannot load the client certificate {cert.certfile!r}: {exc}") from None
    return context
