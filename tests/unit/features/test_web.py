"""The web app over HTTP on a real uvicorn server (127.0.0.1, free port): pages, JSON API, escaping,
read-only database, and no file outside the static folder or the named run directories."""

from __future__ import annotations

import http.client
from urllib.parse import quote, urlsplit

import httpx
import pytest

from tests.unit.features.escaping import DICT, EXPLANATION, inspect


def _raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (no client-side normalisation of ../)."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read()


def test_pages_and_api(site):
    url, _ = site
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.get("/api/features", params={"q": "pwned", "limit": 5})
        assert r.status_code == 200
        rows = r.json()
        assert len(rows) == 5 and all(x["dictionary"] == DICT for x in rows) and {"id", "feature"} & rows[0].keys()
        one = c.get(f"/api/features/{quote(DICT, safe='')}/{rows[0]['feature']}").json()
        assert one["explanations"][0]["text"] == EXPLANATION and "top" in one and "quantiles" in one
        assert c.get(f"/api/features/{quote(DICT, safe='')}/999").status_code == 404
        assert c.get("/api/features", params={"limit": 10**6}).status_code == 400
        for path in ("/", f"/features/{quote(DICT, safe='')}/{rows[0]['feature']}", "/prompt", "/steer", "/runs/"):
            r = c.get(path)
            assert r.status_code == 200, path
            assert "Content-Security-Policy" in r.headers
            doc = inspect(r.text)
            assert doc.comments == []
            text = "".join(doc.text)
            if path in ("/",) or path.startswith("/features"):
                assert EXPLANATION in text and "pwned" not in "".join(doc.tags)
            if path == "/":
                assert "search index: fts5-trigram" in text  # the database's search path is shown
            scripts = r.text.count("<script>")
            assert scripts == (1 if path in ("/prompt", "/steer") else 0), path  # only our own inline script


def test_prompt_and_steering_api(site):
    url, _ = site
    with httpx.Client(base_url=url, timeout=60) as c:
        out = c.post("/api/prompt", json={"text": "<script>abc", "top_k": 3}).json()
        assert out["tokens"][:2] == ["<", "s"] and len(out["next"][0]) == 3
        assert len(out["attention"]) == 2 and len(out["attention"][0]) == 4
        assert c.post("/api/prompt", json={"text": "no digits 123"}).status_code == 400  # not in the vocabulary
        body = {"prompt": "abc", "dictionary": DICT, "feature": 1, "mode": "add", "value": 50.0, "max_new_tokens": 8}
        r = c.post("/api/steer", json=body).json()
        assert len(r["baseline"]) == 8 and r["steered"] != r["baseline"]
        r = c.post("/api/steer", json=body | {"mode": "clamp", "value": 30.0}).json()
        assert r["steered"] != r["baseline"]
        assert c.post("/api/steer", json=body | {"feature": 10**6}).status_code == 400
        assert c.post("/api/steer", json=body | {"mode": "scale"}).status_code == 400


@pytest.mark.parametrize("path", ["/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py",
                                  "/static/%2e%2e%2f%2e%2e%2fdb.py", "/static//etc/passwd", "/static/../../../../etc/passwd",
                                  "/runs/0/../../secret.txt", "/runs/0/patching/escape/secret.txt",
                                  "/runs/0/%2e%2e/secret.txt", "/runs/1/x", "/runs/..%2f..%2fsecret.txt",
                                  "/features/../../etc/passwd"])
def test_traversal_fails_safely(site, path):
    url, _ = site
    status, body = _raw_get(url, path)
    assert status in (400, 404, 422), (path, status)
    assert b"SECRET" not in body and b"import" not in body and b"root:" not in body


def test_static_and_run_files_are_served(site):
    url, _ = site
    assert _raw_get(url, "/static/favicon.svg")[0] == 200
    status, body = _raw_get(url, "/runs/0/patching/result.json")
    assert status == 200 and body == b'{"ok": 1}'
    status, body = _raw_get(url, "/runs/0/patching/")
    assert status == 200 and b"result.json" in body and b"escape" not in body  # the outward symlink is hidden


def test_database_is_opened_read_only(site):
    _, tmp = site
    from mechscope.web.app import _State

    st = _State(str(tmp / "f.db"), None, None, [])
    with pytest.raises(Exception, match="readonly"):
        st.db().execute("DELETE FROM features")
