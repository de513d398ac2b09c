"""``pyrelctl install URL`` against an HTTP server on loopback in this process
(devtools/artifactserver.py), offline under --root (issue 31, item 2)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.artifactserver import ArtifactServer, Route, serve
from devtools.releases import make_generic_release
from tests.cli.conftest import Result, run
from tests.cli.test_signatures import keypair, sign

NAME = "hello-1.0.tar.gz"


@pytest.fixture(autouse=True)
def no_proxy_from_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests set the proxy variables they mean; none is inherited."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


class Host:
    """A --root that trusts the key `ops` for hello, and hello 1.0 signed by it."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        trusted = self.root / "etc/pyrelctl/hello"
        trusted.mkdir(parents=True)
        self.ops, self.intruder = keypair(tmp_path, "ops"), keypair(tmp_path, "intruder")
        public = Path(f"{self.ops}.pub").read_text().split()
        (trusted / "allowed_signers").write_text(
            f'ops@example namespaces="pyrelctl-release" {public[0]} {public[1]}\n'
        )
        self.artifact = make_generic_release(tmp_path / "a", name="hello", version="1.0")
        assert self.artifact.name == NAME
        self.data = self.artifact.read_bytes()
        self.signature = self.signed_by(self.ops)

    def signed_by(self, key: Path) -> bytes:
        path = sign(key, self.artifact)
        try:
            return path.read_bytes()
        finally:
            path.unlink()

    def routes(self, **changed: Route) -> dict[str, Route]:
        """The artifact and its .sig at /NAME, as ``changed`` says otherwise."""
        routes = {f"/{NAME}": Route(self.data), f"/{NAME}.sig": Route(self.signature)}
        routes.update({f"/{k}": v for k, v in changed.items()})
        return routes

    def untouched(self) -> None:
        """Nothing installed, and nothing of a download left."""
        assert not (self.root / "opt").exists()
        assert not (self.root / "etc/systemd").exists()
        downloads = self.root / "var/lib/pyrelctl/.downloads"
        assert not downloads.exists() or list(downloads.iterdir()) == []
        assert not (self.root / "var/lib/pyrelctl/hello").exists()


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


@pytest.fixture
def served(host: Host) -> Iterator[ArtifactServer]:
    with serve(host.routes()) as server:
        yield server


def install(capsys: pytest.CaptureFixture[str], host: Host, url: str, *args: str) -> Result:
    return run(capsys, "--root", host.root, "install", url, "--allow-http", *args)


def test_a_signed_release_installs_from_a_url(
    host: Host, served: ArtifactServer, capsys: pytest.CaptureFixture[str]
) -> None:
    result = install(capsys, host, f"{served.url}/{NAME}")
    assert result.code == 0, result.err
    assert "signed by ops@example" in result.err
    assert os.readlink(host.root / "opt/hello/current") == "releases/1.0"
    assert (host.root / "opt/hello/releases/1.0/release.toml").is_file()
    # The signature first (nothing large is fetched for an artifact that
    # cannot be checked), then the artifact; nothing left of either.
    assert [r.split()[1] for r in served.requests] == [f"/{NAME}.sig", f"/{NAME}"]
    assert list((host.root / "var/lib/pyrelctl/.downloads").iterdir()) == []


def test_a_redirect_on_the_same_scheme_is_followed(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(host.routes(**{"latest.tar.gz": Route(status=302, location=f"/{NAME}")})) as s:
        s.routes["/latest.tar.gz.sig"] = Route(status=302, location=f"{s.url}/{NAME}.sig")
        result = install(capsys, host, f"{s.url}/latest.tar.gz", "--app", "hello")
    assert result.code == 0, result.err


@pytest.mark.parametrize(
    ("case", "code", "expected"),
    [
        ("intruder", 2, "not made by a key trusted"),
        ("tampered", 2, "bad signature"),
        ("no signature", 2, "404"),
        ("too large", 2, "Content-Length"),
        ("too large, no length", 2, "its body is larger than"),
        ("stalled", 1, "the server sent nothing for 0.5 s"),
        ("stalled before answering", 1, "the server sent nothing for 0.5 s"),
        ("cut short", 1, "the transfer ended after"),
        ("server error", 1, "503"),
        ("redirect to file", 2, "redirects to file:///etc/passwd"),
        ("redirect to https", 2, "pyrelctl stays with http://"),
        ("huge signature", 2, "larger than 65536 bytes"),
    ],
)
def test_a_bad_download_is_refused_with_nothing_written(
    host: Host, capsys: pytest.CaptureFixture[str], case: str, code: int, expected: str
) -> None:
    data = host.data
    big = os.urandom(300 * 1024)
    routes = {
        "intruder": host.routes(**{f"{NAME}.sig": Route(host.signed_by(host.intruder))}),
        "tampered": host.routes(**{NAME: Route(data + b"\0" * 512)}),
        "no signature": host.routes(**{f"{NAME}.sig": Route(b"gone", status=404)}),
        "too large": host.routes(**{NAME: Route(big)}),
        "too large, no length": host.routes(**{NAME: Route(big, length=False)}),
        "stalled": host.routes(**{NAME: Route(data, stall_after=100)}),
        "stalled before answering": host.routes(**{NAME: Route(data, answer=False)}),
        "cut short": host.routes(**{NAME: Route(data, declared=len(data) + 100)}),
        "server error": host.routes(**{NAME: Route(b"busy", status=503)}),
        "redirect to file": host.routes(**{NAME: Route(status=302, location="file:///etc/passwd")}),
        "redirect to https": host.routes(
            **{NAME: Route(status=301, location=f"https://127.0.0.1:1/{NAME}")}
        ),
        "huge signature": host.routes(**{f"{NAME}.sig": Route(big)}),
    }[case]
    with serve(routes) as server:
        result = install(
            capsys, host, f"{server.url}/{NAME}", "--max-size", "200K", "--fetch-timeout", "0.5"
        )
    assert result.code == code, result.err
    errors = [line for line in result.err_lines if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], result.err
    assert ".downloads" not in result.err  # the URL is named, not where its bytes were
    host.untouched()


def test_a_stall_that_is_no_stall_is_not_refused(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    """The timeout is for silence, not for the whole transfer: a body sent
    slowly but steadily arrives."""
    pieces = -(-len(host.data) // 256)
    pace = 1.5 / pieces  # the whole body takes 1.5 s, three times the timeout
    with serve(host.routes(**{NAME: Route(host.data, pace=pace)})) as server:
        result = install(capsys, host, f"{server.url}/{NAME}", "--fetch-timeout", "0.5")
    assert result.code == 0, result.err
    assert pieces >= 4 and pace < 0.5


@pytest.mark.parametrize(
    ("url", "args", "expected"),
    [
        ("http://127.0.0.1:9/hello-1.0.tar.gz", (), "plain http shows the release"),
        ("ftp://127.0.0.1/hello-1.0.tar.gz", (), "fetches https:// (or http://) URLs only"),
        ("file:///srv/hello-1.0.tar.gz", (), "fetches https:// (or http://) URLs only"),
        ("https://127.0.0.1/releases/latest", (), "must end with the artifact's file name"),
        ("https://127.0.0.1/..%2f.tar.gz", (), "must end with the artifact's file name"),
        ("https://u:secret@127.0.0.1/hello-1.0.tar.gz", (), "credentials in a URL"),
        ("https://127.0.0.1:x/hello-1.0.tar.gz", (), "not a valid URL"),
        ("https:///hello-1.0.tar.gz", (), "no host in the URL"),
    ],
)
def test_a_url_pyrelctl_does_not_fetch_is_refused_before_any_request(
    host: Host, capsys: pytest.CaptureFixture[str], url: str, args: tuple[str, ...], expected: str
) -> None:
    result = run(capsys, "--root", host.root, "install", url, *args)
    assert result.code == 2, result.err
    assert expected in result.err_lines[0], result.err
    assert "secret" not in result.err
    host.untouched()
    assert not (host.root / "var/lib/pyrelctl/.downloads").exists()


def test_an_unsigned_url_needs_an_app_without_keys_and_the_option(
    host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare"  # trusts no key at all
    with serve({f"/{NAME}": Route(host.data)}) as server:
        url = f"{server.url}/{NAME}"
        plain = run(capsys, "--root", bare, "install", url, "--allow-http")
        assert plain.code == 2 and "no key on this host applies" in plain.err, plain.err
        assert "--insecure-unsigned" in plain.err
        assert server.requests == []  # refused before fetching anything
        # The app has keys: the option does not waive them.
        keyed = install(capsys, host, url, "--insecure-unsigned")
        assert keyed.code == 2 and "its releases must be signed" in keyed.err, keyed.err
        host.untouched()
        assert server.requests == []
        # No key, and the option: installed, without fetching any .sig.
        ok = run(capsys, "--root", bare, "install", url, "--allow-http", "--insecure-unsigned")
        assert ok.code == 0, ok.err
        assert [r.split()[1] for r in server.requests] == [f"/{NAME}"]
    assert os.readlink(bare / "opt/hello/current") == "releases/1.0"


def test_an_unsigned_url_is_refused_when_the_release_turns_out_to_have_keys(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    """The URL's name guessed no app with keys; the release is hello, which has."""
    with serve({"/renamed.tar.gz": Route(host.data)}) as server:
        result = install(capsys, host, f"{server.url}/renamed.tar.gz", "--insecure-unsigned")
    assert result.code == 2 and "requires a signed release" in result.err, result.err
    host.untouched()


def test_the_options_of_a_url_are_refused_for_a_file(
    host: Host, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run(capsys, "--root", host.root, "install", host.artifact, "--insecure-unsigned")
    assert result.code == 2 and "are for a URL" in result.err
    host.untouched()


def test_a_signature_url_may_be_given(host: Host, capsys: pytest.CaptureFixture[str]) -> None:
    """A presigned link cannot take `.sig` on its path: --signature names the
    signature's own URL; the query (a token) shows in no message."""
    routes = {f"/{NAME}": Route(host.data), "/sigs/hello.sig": Route(host.signature)}
    with serve(routes) as server:
        result = install(
            capsys, host, f"{server.url}/{NAME}?token=secret", "--signature",
            f"{server.url}/sigs/hello.sig?token=secret2", "-v",
        )  # fmt: skip
    assert result.code == 0, result.err
    assert "secret" not in result.err + result.out


def test_dry_run_from_a_url_changes_nothing(
    host: Host, served: ArtifactServer, capsys: pytest.CaptureFixture[str]
) -> None:
    result = install(capsys, host, f"{served.url}/{NAME}", "--dry-run")
    assert result.code == 0, result.err
    assert "would install hello 1.0" in result.out
    host.untouched()


def test_the_proxy_variables_are_used(
    host: Host, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """http_proxy sends the request to the proxy (here a test server, which
    answers the absolute URL's path); no_proxy makes a host bypass it."""
    with serve() as proxy, serve(host.routes()) as direct:
        proxy.routes.update(
            {f"http://releases.invalid/{k.lstrip('/')}": v for k, v in host.routes().items()}
        )
        monkeypatch.setenv("http_proxy", proxy.url)
        result = install(capsys, host, f"http://releases.invalid/{NAME}")
        assert result.code == 0, result.err
        assert proxy.requests[-1] == f"GET http://releases.invalid/{NAME} HTTP/1.1"
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        again = install(capsys, host, f"{direct.url}/{NAME}")
        assert again.code == 0, again.err
        assert len(proxy.requests) == 2 and len(direct.requests) == 2


def test_the_bytes_are_in_an_unnamed_file_and_a_killed_pulls_leftovers_go(
    host: Host,
    served: ArtifactServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """While the install runs, .downloads holds no file of the artifact's
    bytes: only a private directory with a link to /proc/PID/fd/N (and the
    small .sig). A directory left by a process that is gone is removed by
    the next pull; one of a live process is not."""
    from pyrelctl.deploy.deployer import Deployer

    downloads = host.root / "var/lib/pyrelctl/.downloads"
    downloads.mkdir(parents=True, mode=0o700)
    dead = downloads / "2147483646.abc"  # above any pid_max: no such process
    (dead / "sub").mkdir(parents=True)
    alive = downloads / f"{os.getpid()}.keep"
    alive.mkdir()
    seen: list[tuple[str, str, int]] = []
    original = Deployer.install

    def install_spy(self: Deployer, artifact: Path, opts: object) -> object:
        assert not dead.exists()
        for path in sorted(downloads.rglob("*")):
            if path.is_symlink():
                seen.append((path.name, os.readlink(path), os.stat(path).st_nlink))
            elif path.is_file():
                seen.append((path.name, "file", path.stat().st_size))
        assert artifact.read_bytes() == host.data
        return original(self, artifact, opts)  # type: ignore[arg-type]

    monkeypatch.setattr(Deployer, "install", install_spy)
    result = install(capsys, host, f"{served.url}/{NAME}")
    assert result.code == 0, result.err
    [(link, target, links), (sig, kind, size)] = seen
    assert link == NAME and re.fullmatch(rf"/proc/{os.getpid()}/fd/\d+", target)
    assert links == 0  # the file the link opens has no name anywhere
    assert (sig, kind, size) == (f"{NAME}.sig", "file", len(host.signature))
    assert sorted(p.name for p in downloads.iterdir()) == [alive.name]


def certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "releases test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_https_checks_the_servers_certificate(
    host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """https needs no option; a certificate the host does not trust is a
    failed transfer (exit 1), one it trusts (SSL_CERT_FILE) installs, and a
    redirect from https down to http is refused."""
    import ssl

    cert, key = certificate(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-bundle.pem"))
    with serve(host.routes(), tls=tls) as server:
        url = f"{server.url}/{NAME}"
        assert url.startswith("https://")
        untrusted = run(capsys, "--root", host.root, "install", url)
        assert untrusted.code == 1, untrusted.err
        assert "TLS failed" in untrusted.err and "certificate verify failed" in untrusted.err
        host.untouched()
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        down = f"http://127.0.0.1:1/{NAME}"
        server.routes[f"/down/{NAME}.sig"] = Route(status=302, location=f"{down}.sig")
        downgraded = run(capsys, "--root", host.root, "install", f"{server.url}/down/{NAME}")
        assert downgraded.code == 2 and "pyrelctl stays with https://" in downgraded.err
        host.untouched()
        trusted = run(capsys, "--root", host.root, "install", url)
        assert trusted.code == 0, trusted.err
