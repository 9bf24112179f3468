"""deploy/nginx/cdn_link.js, the edge's signed-link check (docs/cdn-signed-links.md), on links Keel signs:
run by njs itself, each answer is the one Keel's own check gives (200 for ok, 410 for expired, 403 for
everything else), whatever was tampered with; and in nginx with the page's configuration, in front of
an origin, the same answers over HTTP, percent-encoded paths included ($uri is the decoded path)."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from keel.core.signing import UrlSigner, VerifyResult
from tests.support import servers

NGINX = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
SECRET = "edge-test-secret-0123456789abcdef"
MAX_TTL_S = 3600
STATUS = {VerifyResult.OK: "200", VerifyResult.EXPIRED: "410"}  # anything else: 403

Case = tuple[str, str, dict[str, str]]  # (what, decoded path, query args)


def _njs() -> str:
    found = shutil.which("njs")
    if found is None:
        pytest.fail("no njs to run deploy/nginx/cdn_link.js: `apt-get install njs` (.ci/run does it)")
    return found


def _cases() -> list[Case]:
    now = time.time()
    signer = UrlSigner(SECRET, max_ttl_s=MAX_TTL_S)
    path = "/cdn/audio/r42-s1-a1"
    good = signer.sign(path, 600)
    args = {"exp": str(good.exp), "kid": good.kid, "sig": good.sig}
    other_sig = "A" if good.sig[-1] != "A" else "B"
    expired = UrlSigner(SECRET, clock=lambda: now - 4_000).sign(path, 600)
    generous = UrlSigner(SECRET, max_ttl_s=10**6)  # as a leaked key would sign
    far = generous.sign(path, 10**6)
    unicode_path = "/cdn/audio/маршрут-1"
    spoken = signer.sign(unicode_path, 600)
    return [
        ("a link as signed", path, args),
        ("without kid: the current key", path, {"exp": args["exp"], "sig": good.sig}),
        (
            "a non-ASCII path, signed decoded",
            unicode_path,
            {"exp": str(spoken.exp), "kid": "k1", "sig": spoken.sig},
        ),
        ("the signature's last character changed", path, {**args, "sig": good.sig[:-1] + other_sig}),
        ("another path, the same query", "/cdn/audio/r42-s2-a1", args),
        ("the expiry moved on by a second", path, {**args, "exp": str(good.exp + 1)}),
        ("the expiry with a leading zero", path, {**args, "exp": "0" + args["exp"]}),
        ("the expiry not a number", path, {**args, "exp": args["exp"] + "a"}),
        ("a key id nobody has", path, {**args, "kid": "k9"}),
        ("a key id that names an object property", path, {**args, "kid": "constructor"}),
        ("a signature one character short", path, {**args, "sig": good.sig[:-1]}),
        ("no signature", path, {"exp": args["exp"], "kid": "k1"}),
        ("expired, signature good", path, {"exp": str(expired.exp), "kid": "k1", "sig": expired.sig}),
        (
            "an expiry beyond any TTL, signature good",
            path,
            {"exp": str(far.exp), "kid": "k1", "sig": far.sig},
        ),
    ]


def _keel(signer: UrlSigner, path: str, args: dict[str, str]) -> str:
    result = signer.verify(path, args.get("exp"), args.get("sig"), args.get("kid"))
    return STATUS.get(result, "403")


def test_the_edge_script_answers_every_link_as_keel_does(tmp_path: Path) -> None:
    cases = _cases()
    driver = tmp_path / "driver.js"
    driver.write_text(
        "import cdn from 'cdn_link.js';\n"
        f"const cases = {json.dumps([{'uri': p, 'args': a} for _, p, a in cases])};\n"
        "console.log(JSON.stringify(cases.map(c => cdn.status({uri: c.uri, args: c.args}))));\n",
        encoding="utf-8",
    )
    done = subprocess.run(
        [_njs(), "-p", str(NGINX), str(driver)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"CDN_SECRET_K1": SECRET, "CDN_MAX_TTL_S": str(MAX_TTL_S), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    edge = json.loads(done.stdout.strip().splitlines()[-1])
    keel = UrlSigner(SECRET, max_ttl_s=MAX_TTL_S)
    answers = {
        what: (theirs, _keel(keel, path, args))
        for (what, path, args), theirs in zip(cases, edge, strict=True)
    }
    assert {what: pair for what, pair in answers.items() if pair[0] != pair[1]} == {}, answers
    assert [edge for edge, _ in answers.values()] == ["200"] * 3 + ["403"] * 9 + ["410", "403"], answers


NGINX_CONF = """
load_module /usr/lib/nginx/modules/ngx_http_js_module.so;
env CDN_SECRET_K1;
env CDN_MAX_TTL_S;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    js_path {scripts};
    js_import cdn from cdn_link.js;
    js_set $cdn_link_status cdn.status;
    limit_req_zone $binary_remote_addr zone=cdn:1m rate=1000r/s;
    upstream keel_origin {{ server 127.0.0.1:{origin}; }}
    server {{
        listen 127.0.0.1:{port};
        location /cdn/audio/ {{
            limit_req zone=cdn burst=20 nodelay;
            if ($cdn_link_status = "403") {{ return 403; }}
            if ($cdn_link_status = "410") {{ return 410; }}
            proxy_pass http://keel_origin;
        }}
    }}
}}
"""


class _Origin(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"RIFF audio"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[str]:
    """nginx with the documented location in front of a stand-in origin; its base URL."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists() or not Path("/usr/lib/nginx/modules/ngx_http_js_module.so").exists():
        pytest.fail("no nginx with njs: `apt-get install nginx libnginx-mod-http-js` (.ci/run does it)")
    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    port = servers.free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(prefix=tmp_path, scripts=NGINX, origin=origin.server_address[1], port=port)
    )
    env = {"CDN_SECRET_K1": SECRET, "CDN_MAX_TTL_S": str(MAX_TTL_S), "PATH": "/usr/sbin:/usr/bin:/bin"}
    proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)], env=env, stderr=subprocess.PIPE)
    try:
        servers.wait_for_port(port, 10)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        origin.shutdown()


def test_nginx_with_the_documented_location_answers_as_keel_does(edge: str) -> None:
    keel = UrlSigner(SECRET, max_ttl_s=MAX_TTL_S)
    with httpx.Client(base_url=edge, timeout=10) as client:
        answers = {}
        for what, path, args in _cases():
            response = client.get(quote(path, safe="/"), params=args)
            answers[what] = (str(response.status_code), _keel(keel, path, args))
            if response.status_code == 200:
                assert response.content == b"RIFF audio", what
    assert {what: pair for what, pair in answers.items() if pair[0] != pair[1]} == {}, answers
