"""Issue 9, acceptance 3: the exporter speaks the Prometheus exporter-toolkit's web config (TLS
with a client CA, bcrypt basic auth, headers), gzip, the usual --web.* flags, tested with curl;
and `promtool check metrics` passes on a scrape of 1000 programs."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys

import bcrypt
import pytest

from .conftest import fast_alerts
from .harness import ExporterProcess, free_port, wait_for

pytestmark = pytest.mark.skipif(not shutil.which("curl") or not shutil.which("openssl"), reason="needs curl, openssl")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_pki(d) -> dict[str, str]:  # noqa: ANN001
    """A CA, a server certificate for 127.0.0.1, a client certificate from the CA, and one from elsewhere."""
    p = {k: str(d / f"{k}.pem") for k in ("ca", "ca_key", "server", "server_key", "client", "client_key",
                                           "rogue", "rogue_key")}
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p["ca_key"], "-out", p["ca"], "-days", "2",
            "-subj", "/CN=lookout test CA")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, signer in (("server", "ca"), ("client", "ca"), ("rogue", None)):
        csr = str(d / f"{name}.csr")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p[f"{name}_key"], "-out", csr, "-subj",
                f"/CN={name}")
        if signer:
            openssl("x509", "-req", "-in", csr, "-CA", p["ca"], "-CAkey", p["ca_key"], "-CAcreateserial", "-out",
                    p[name], "-days", "2", "-extfile", str(d / "san.ext"))
        else:
            openssl("x509", "-req", "-in", csr, "-signkey", p[f"{name}_key"], "-out", p[name], "-days", "2")
    return p


def curl(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/stdout", "--max-time", "20", *args, url],
                          capture_output=True, timeout=60)


def status_of(result: subprocess.CompletedProcess) -> int:
    first = result.stdout.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) > 1 else 0


def test_web_config_tls_client_ca_bcrypt_headers_and_gzip(supervisor_factory, webhook, tmp_path):
    pki = make_pki(tmp_path)
    # A Go-style hash ($2y$, what `htpasswd -nB` writes), as in exporter-toolkit's documentation.
    hashed = "$2y$" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(10)).decode()[4:]
    web = tmp_path / "web-config.yml"
    web.write_text(f"""\
# exporter-toolkit web configuration (https://github.com/prometheus/exporter-toolkit)
tls_server_config:
  cert_file: {pki['server']}
  key_file: {pki['server_key']}
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {pki['ca']}
  min_version: TLS12
http_server_config:
  http2: true
  headers:
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
basic_auth_users:
  prometheus: '{hashed}'
""")
    sup = supervisor_factory("[program:svc]\ncommand=sleep 1000\n", fast_alerts(webhook)).start()
    port = free_port()
    exp = subprocess.Popen([sys.executable, "-m", "lookout.exporter", "-c", str(sup.config_path),
                            "--web.listen-address", f"127.0.0.1:{port}", "--web.config.file", str(web),
                            "--web.telemetry-path", "/probe-metrics"],
                           stdout=subprocess.DEVNULL, stderr=open(tmp_path / "exporter.log", "ab"))  # noqa: SIM115
    try:
        url = f"https://127.0.0.1:{port}/probe-metrics"
        mtls = ("--cacert", pki["ca"], "--cert", pki["client"], "--key", pki["client_key"])
        wait_for(lambda: status_of(curl(f"https://127.0.0.1:{port}/healthz", *mtls)) == 200, 20, "exporter up")
        ok = curl(url, *mtls, "-u", "prometheus:s3cret")
        assert status_of(ok) == 200 and b"supervisor_process_up" in ok.stdout
        assert b"X-Frame-Options: deny" in ok.stdout and b"X-Content-Type-Options: nosniff" in ok.stdout
        assert status_of(curl(url, *mtls, "-u", "prometheus:wrong")) == 401
        assert status_of(curl(url, *mtls)) == 401
        assert status_of(curl(url, *mtls, "-u", "nobody:s3cret")) == 401
        assert curl(url, "--cacert", pki["ca"], "-u", "prometheus:s3cret").returncode != 0  # no client cert
        rogue = curl(url, "--cacert", pki["ca"], "--cert", pki["rogue"], "--key", pki["rogue_key"],
                     "-u", "prometheus:s3cret")
        assert rogue.returncode != 0 or status_of(rogue) == 0  # a certificate from another CA: refused
        assert status_of(curl(f"https://127.0.0.1:{port}/metrics", *mtls, "-u", "prometheus:s3cret")) == 404
        zipped = curl(url, *mtls, "-u", "prometheus:s3cret", "-H", "Accept-Encoding: gzip")
        head, _, body = zipped.stdout.partition(b"\r\n\r\n")
        assert b"Content-Encoding: gzip" in head and b"supervisor_process_up" in gzip.decompress(body)
    finally:
        exp.terminate()
        exp.wait(10)


@pytest.mark.parametrize("bad", [
    ("basic_auth_users:\n  prom: plaintext-password\n", "must be a bcrypt hash"),
    ("tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n", "no such file"),
    ("tls_srever_config: {}\n", "unknown key"),
    ("http_server_config:\n  headers:\n    Content-Type: text/html\n", "cannot be configured"),
])
def test_bad_web_config_is_one_line_and_exit_2(tmp_path, bad):
    text, needle = bad
    web = tmp_path / "web.yml"
    web.write_text(text)
    toml = tmp_path / "lookout.toml"
    toml.write_text(f'[state]\npath = "{tmp_path / "db"}"\n')
    result = subprocess.run([sys.executable, "-m", "lookout.exporter", "-c", str(toml), "--web.config.file", str(web),
                             "--web.listen-address", f"127.0.0.1:{free_port()}"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines


def test_promtool_check_metrics_at_1000_programs(supervisor_factory, webhook, promtool):
    programs = "\n".join(f"[program:pool{g}]\ncommand=sleep 100000\nprocess_name=%(program_name)s_%(process_num)03d\n"
                         f"numprocs=100\nstartsecs=0\n" for g in range(10))
    sup = supervisor_factory(programs, fast_alerts(webhook)).start()
    exp = ExporterProcess(sup).start()
    try:
        def all_running() -> str:
            try:
                body = exp.get("/metrics")[1]
            except OSError:  # a scrape slower than 10 s while 1000 programs start on a busy machine: not yet
                return ""
            up = [line for line in body.splitlines() if line.startswith('supervisor_process_up{group="pool')]
            return body if len(up) == 1000 and all(line.endswith(" 1") for line in up) else ""
        body = wait_for(all_running, 90, "1000 programs RUNNING in the scrape", interval=1)
        assert len(body) > 1_000_000
        check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        exp.stop()
