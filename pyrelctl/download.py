"""Installing from a URL: ``pyrelctl install https://releases.example/shop-1.4.0.tar.gz``.

The artifact is fetched into a private temporary file and installed from
there as from a file: the install reads it once and checks its signature on
those bytes before it parses any of them (archive.open_artifact,
signatures.Verification). This module decides, before a byte is fetched,
whether the URL may be used at all, and bounds the transfer:

- ``https://`` only, unless ``--allow-http``: a release holds the app's code
  (and a mix release its cookie), which plain http shows to anyone on the
  way; a redirect to another scheme is refused.
- A signature from ``URL.sig`` (``.sig`` added to the URL's path), checked
  against the allowed_signers that applies to the artifact's name (or
  ``--app``); a host that trusts no key for it can check nothing, so the
  install is refused unless ``--insecure-unsigned`` says that this is meant,
  which in turn is refused where a key applies.
- At most ``--max-size`` bytes (a compressed release is smaller than what
  it unpacks to), refused by Content-Length before the body, or as soon as
  the body passes it; a server that sends nothing for ``--fetch-timeout``
  seconds (connecting, or mid-transfer) is dropped.

Where the bytes live: an unnamed file (``O_TMPFILE``, through
:class:`tempfile.TemporaryFile`) in ``/var/lib/pyrelctl/.downloads``, a
directory only root may enter. Not /tmp: there other users may create names,
and it may be a RAM-backed tmpfs too small for a release of gigabytes. An
unnamed file disappears with its last descriptor, so nothing is left behind
however the command ends (SIGTERM from a unit's TimeoutStartSec= included).
The install opens artifacts by path, so a private directory beside it holds
a link named as the URL's file (``shop-1.4.0.tar.gz``: the name picks the
app's keys, as it does for a file) to ``/proc/PID/fd/N``, which opens that
same file, and the fetched ``.sig``; it is removed when the install ends,
and one left by a killed pyrelctl is removed by the next download.

Proxies: :mod:`urllib.request` reads ``http_proxy``, ``https_proxy`` and
``no_proxy`` (lower case wins over upper case; an empty value unsets), and
tunnels https through an http proxy with CONNECT, so TLS is checked end to
end against the system's CA certificates (``SSL_CERT_FILE`` overrides).
What it does not do, where curl and requests do: ``all_proxy``, CIDR ranges
in ``no_proxy``, a socks proxy, TLS to the proxy itself. See docs/deploys.md.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pyrelctl import __version__
from pyrelctl.archive import TAR_SUFFIXES
from pyrelctl.errors import BadInput, FetchFailed, PyrelctlError
from pyrelctl.hostfiles import ensure_dir
from pyrelctl.layout import Layout

#: Below the host's pyrelctl state directory (var/lib/pyrelctl); not an app
#: name (those start with a letter), like ``.locks``.
DOWNLOADS = ".downloads"
#: An OpenSSH signature is under 1 KiB; anything much larger is not one.
MAX_SIGNATURE = 64 * 1024
#: Bytes asked for at a time: what one read of the socket gives, at most.
CHUNK = 256 * 1024
#: A URL's file name becomes a file name here, and picks the app's keys.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,254}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

Say = Callable[[str], None]


@dataclass(frozen=True)
class PullOptions:
    """What ``install URL`` was asked to do beyond an install from a file."""

    max_bytes: int
    timeout: float
    app: str | None = None
    #: ``--signature``: a URL to fetch, or a local file; default the URL + ``.sig``
    signature: str | None = None
    allow_http: bool = False
    insecure_unsigned: bool = False


@dataclass(frozen=True)
class Pulled:
    """A fetched artifact, ready to install as a file while :func:`pull` lasts."""

    #: named as the URL's file; opens the fetched bytes
    artifact: Path
    #: a local ``--signature`` file to use; None: the one beside ``artifact``, if any
    signature: Path | None


def is_url(text: str) -> bool:
    """Whether an install's ARTIFACT is a URL (any ``scheme://``), not a path."""
    return _SCHEME.match(text) is not None


def shown(url: str) -> str:
    """``url`` for messages: without its query or fragment, where a presigned
    link keeps its token (it would end up in the journal)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _check_location(url: str, *, allow_http: bool) -> urllib.parse.SplitResult:
    """Refuse a URL pyrelctl does not fetch from (scheme, host, credentials)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as e:
        raise BadInput(f"{shown(url)}: not a valid URL ({e})") from e
    scheme = parts.scheme.lower()
    if scheme == "http" and not allow_http:
        raise BadInput(
            f"{shown(url)}: plain http shows the release to anyone on the way, and lets "
            "them change an unsigned one",
            hint="use https://, or add --allow-http if this network is trusted",
        )
    if scheme not in ("http", "https"):
        raise BadInput(f"{shown(url)}: pyrelctl fetches https:// (or http://) URLs only")
    if not parts.hostname:
        raise BadInput(f"{shown(url)}: no host in the URL")
    if parts.username is not None or parts.password is not None:
        # urllib would not send them, and they would show in ps and the journal.
        raise BadInput(
            f"{scheme}://…@{parts.hostname}: credentials in a URL are not supported",
            hint="use a link that carries its own token (a presigned URL), or a proxy",
        )
    return parts


def check_url(url: str, *, allow_http: bool) -> str:
    """Refuse a URL pyrelctl does not fetch an artifact from; return the file
    name it names (the name of the link the install reads)."""
    parts = _check_location(url, allow_http=allow_http)
    name = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
    if not _NAME.fullmatch(name) or not name.endswith(TAR_SUFFIXES):
        raise BadInput(
            f"{shown(url)}: the URL must end with the artifact's file name "
            "(NAME-VERSION.tar.gz, .tgz or .tar)"
        )
    return name


def signature_url(url: str) -> str:
    """``URL.sig``: ``.sig`` added to the URL's path, the query kept."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path + ".sig"))


@contextlib.contextmanager
def pull(layout: Layout, url: str, opts: PullOptions, say: Say) -> Iterator[Pulled]:
    """Fetch ``url`` (and its signature) for one install; yield where it is.

    Every refusal that needs no byte of the artifact comes first: the URL,
    whether a signature can be checked, the signature itself. Raises
    :class:`BadInput` (exit 2) for what the URL refers to, and
    :class:`FetchFailed` (exit 1) for a transfer that failed and may work
    again later. Nothing is left on disk when this ends.
    """
    from pyrelctl.signatures import applicable_signers

    name = check_url(url, allow_http=opts.allow_http)
    signers = applicable_signers(layout, opts.app, Path(name))
    if opts.insecure_unsigned:
        if signers is not None:
            raise BadInput(
                f"--insecure-unsigned, but {signers} lists keys trusted for {name}: "
                "its releases must be signed"
            )
        if opts.signature is not None:
            raise BadInput("give either --signature or --insecure-unsigned, not both")
    elif signers is None:
        raise BadInput(
            f"no key on this host applies to {name}, so its signature cannot be checked: "
            "pyrelctl installs a URL only when it can",
            hint="list the signer's key in /etc/pyrelctl/APP/allowed_signers "
            "(or add --insecure-unsigned, for an app that trusts no key)",
        )
    local_signature = (
        Path(opts.signature) if opts.signature is not None and not is_url(opts.signature) else None
    )
    if local_signature is not None and not local_signature.is_file():
        raise BadInput(f"{local_signature}: no such file")
    downloads = layout.state_root / DOWNLOADS
    ensure_dir(downloads, 0o700)
    _sweep(downloads)
    fetcher = _Fetcher(opts.timeout, allow_http=opts.allow_http, say=say)
    with contextlib.ExitStack() as stack:
        links = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}.", dir=downloads))
        stack.callback(shutil.rmtree, links, ignore_errors=True)
        sig_url = opts.signature or signature_url(url)
        if signers is not None and local_signature is None:
            _check_location(sig_url, allow_http=opts.allow_http)
            # A regular file, small: ssh-keygen reads it by name.
            with open(links / f"{name}.sig", "xb") as sig:
                fetcher.fetch(sig_url, sig, MAX_SIGNATURE, what="signature")
        # Unnamed, readable and writable by root only (mode 0600 in a 0700 directory).
        data = stack.enter_context(tempfile.TemporaryFile(dir=downloads))
        fetcher.fetch(url, data, opts.max_bytes, what="artifact")
        data.flush()
        # Opened again through /proc: the same file, from offset 0.
        (links / name).symlink_to(f"/proc/{os.getpid()}/fd/{data.fileno()}")
        try:
            yield Pulled(links / name, local_signature)
        except PyrelctlError as e:
            # The install names the files it read: say where they came from.
            _rename(e, {f"{links}/{name}.sig": shown(sig_url), f"{links}/{name}": shown(url)})
            raise


def _rename(error: PyrelctlError, names: dict[str, str]) -> None:
    for path, url in names.items():
        error.message = error.message.replace(path, url)
        error.hint = error.hint and error.hint.replace(path, url)
    error.args = (error.message,)


def _sweep(downloads: Path) -> None:
    """Remove what a killed pyrelctl left: its directory of links (and .sig)."""
    for entry in downloads.iterdir():
        pid = entry.name.split(".", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(entry, ignore_errors=True)


class _SameScheme(urllib.request.HTTPRedirectHandler):
    """Follows redirects (to another host too: release downloads often live on
    a CDN), but never to another scheme: https stays https."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme

    def http_error_302(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any
    ) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location:
            target = urllib.parse.urljoin(req.full_url, location)
            scheme = urllib.parse.urlsplit(target).scheme.lower()
            if scheme != self.scheme:
                fp.close()
                raise BadInput(
                    f"{shown(req.full_url)} redirects to {shown(target)}; "
                    f"pyrelctl stays with {self.scheme}://"
                )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _Fetcher:
    def __init__(self, timeout: float, *, allow_http: bool, say: Say) -> None:
        self.timeout = timeout
        self.allow_http = allow_http
        self.say = say

    def _opener(self, scheme: str) -> urllib.request.OpenerDirector:
        # Only what a download needs: no file:, ftp: or data: handler, which
        # build_opener() would add.
        opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),  # the *_proxy environment variables
            urllib.request.UnknownHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(context=ssl.create_default_context()),
            urllib.request.HTTPDefaultErrorHandler(),
            _SameScheme(scheme),
            urllib.request.HTTPErrorProcessor(),
        ):
            opener.add_handler(handler)
        return opener

    def fetch(self, url: str, into: IO[bytes], limit: int, *, what: str) -> None:
        """Write the body of ``url`` to ``into``: at most ``limit`` bytes, or refused."""
        scheme = urllib.parse.urlsplit(url).scheme.lower()
        request = urllib.request.Request(
            url,
            headers={"User-Agent": f"pyrelctl/{__version__}", "Accept-Encoding": "identity"},
        )
        self.say(f"fetching {shown(url)}")
        started = time.monotonic()
        try:
            with self._opener(scheme).open(request, timeout=self.timeout) as response:
                got = self._body(url, response, into, limit, what)
        except urllib.error.HTTPError as e:
            e.close()
            error = BadInput if 400 <= e.code < 500 else FetchFailed
            hint = None
            if what == "signature" and e.code == 404:
                hint = "sign the artifact and upload its .sig beside it (or give --signature)"
            raise error(f"{shown(url)}: {e.code} {e.reason}", hint=hint) from e
        except urllib.error.URLError as e:
            raise self._failed(url, e.reason) from e
        except (OSError, http.client.HTTPException) as e:
            raise self._failed(url, e) from e
        self.say(f"fetched {what}: {got} bytes in {time.monotonic() - started:.1f} s")

    def _body(self, url: str, response: Any, into: IO[bytes], limit: int, what: str) -> int:
        declared = response.headers.get("Content-Length")
        length = int(declared) if declared and declared.strip().isdigit() else None
        if length is not None and length > limit:
            raise self._too_large(url, what, limit, f"Content-Length {length}")
        got = 0
        # read1: returns what one read of the socket gave, so the timeout
        # applies to every wait for data, not to filling a large buffer.
        while chunk := response.read1(CHUNK):
            got += len(chunk)
            if got > limit:
                raise self._too_large(url, what, limit, "its body")
            into.write(chunk)
        if length is not None and got != length:
            # http.client's read1 returns b"" when the server closes early.
            raise FetchFailed(f"{shown(url)}: the transfer ended after {got} of {length} bytes")
        return got

    @staticmethod
    def _too_large(url: str, what: str, limit: int, why: str) -> BadInput:
        hint = "raise the limit with install --max-size if this is expected"
        if what == "signature":
            hint = "that is no ssh-keygen signature"
        return BadInput(f"{shown(url)}: {why} is larger than {limit} bytes", hint=hint)

    def _failed(self, url: str, reason: object) -> FetchFailed:
        if isinstance(reason, TimeoutError):
            return FetchFailed(
                f"{shown(url)}: the server sent nothing for {self.timeout:g} s",
                hint="raise --fetch-timeout for a slow server",
            )
        if isinstance(reason, ssl.SSLError):
            return FetchFailed(f"{shown(url)}: TLS failed ({reason})")
        if isinstance(reason, OSError) and reason.strerror:
            return FetchFailed(f"{shown(url)}: {reason.strerror}")
        return FetchFailed(f"{shown(url)}: {reason or type(reason).__name__}")
