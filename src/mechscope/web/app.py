"""``create_app``: the FastAPI application behind ``mechscope serve``.

* ``/`` feature browser (search explanation text, sort by density / score), ``/features/{dictionary}/{id}``
  feature pages, ``/prompt`` prompt explorer, ``/steer`` steering playground, ``/runs/...`` files of the
  named run directories (patching heatmaps, circuits, interactive attribution graphs), ``/static/...`` the app's own static folder;
* JSON: ``/api/features?q=&limit=&sort=&dictionary=``, ``/api/features/{dictionary}/{id}``, ``/api/dictionaries``,
  ``POST /api/prompt``, ``POST /api/steer``.

The database is opened read-only, one connection per worker thread. The model (for the explorer and
steering) is loaded on first use. No file outside the static folder and the run directories is served:
paths are resolved and must stay inside their root (symlinks included).
"""


# No `from __future__ import annotations`: FastAPI resolves the body types of the nested endpoints
# (PromptIn, SteerIn) from their annotations at definition time.
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mechscope.errors import ConfigError, MechscopeError
from mechscope.features.db import FeatureDB

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


class _State:
    """Per-app resources: a read-only DB connection per thread, the lazily loaded model and dictionaries."""

    def __init__(self, db_path: str, model: Any, model_loader: Callable[[str], Any] | None,
                 runs: list[Path]) -> None:
        self.db_path, self.runs = db_path, runs
        self._local = threading.local()
        FeatureDB.open(db_path, read_only=True).close()  # fail at start, not at the first request
        self._model, self._loader = model, model_loader
        self._lock = threading.Lock()
        self._dicts: dict[str, Any] = {}

    def db(self) -> FeatureDB:
        conn = getattr(self._local, "db", None)
        if conn is None:
            conn = self._local.db = FeatureDB.open(self.db_path, read_only=True)
        return conn

    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                names = [r["name"] for r in self.db().query("SELECT name FROM models ORDER BY name")]
                if self._loader is None or not names:
                    raise ConfigError("no model to run: start `mechscope serve` with --model NAME")
                self._model = self._loader(names[0])
            return self._model

    def dictionary(self, row: dict[str, Any]) -> Any:
        if row["kind"] != "sae":
            return None
        with self._lock:
            if row["name"] not in self._dicts:
                from mechscope.dictionaries.io import load

                path = row["config"].get("path")
                if not path:
                    raise ConfigError(f"dictionary {row['name']!r} records no path; steering needs its weights")
                self._dicts[row["name"]] = load(path)
            return self._dicts[row["name"]]


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers to every HTTP response.

    (Starlette's ``@app.middleware("http")`` wraps each response in a streaming ``BaseHTTPMiddleware`` layer,
    which cost more than rendering a feature page; this edits the start message in place.)
    """

    HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"no-referrer")]

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _json(data: Any) -> Any:
    """A JSON response serialised by ``json.dumps`` directly (FastAPI's encoder walks every value first)."""
    import json

    from fastapi.responses import Response

    return Response(json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")),
                    media_type="application/json")


def _inside(root: Path, rel: str) -> Path | None:
    """``root / rel`` resolved, if it stays inside ``root`` (else None)."""
    base = root.resolve()
    target = (base / rel).resolve()
    return target if target == base or target.is_relative_to(base) else None


def create_app(db_path: str | Path, *, model: Any = None, model_loader: Callable[[str], Any] | None = None,
               runs: list[str | Path] | None = None) -> Any:
    """Build the app for the database at ``db_path`` (see the module docstring)."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

    from mechscope.features.render import feature_page
    from mechscope.features.render import page as render_page
    from mechscope.web import pages
    from mechscope.web.model_ops import Steering, explore_prompt, generate_text
    from mechscope.web.schemas import PromptIn, SteerIn

    state = _State(str(db_path), model, model_loader, [Path(r) for r in runs or []])
    app = FastAPI(title="mechscope", docs_url=None, redoc_url=None, openapi_url=None)

    app.add_middleware(SecurityHeaders)

    @app.exception_handler(MechscopeError)
    async def mechscope_error(request: Request, exc: MechscopeError) -> Any:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def clamp_limit(limit: int) -> int:
        if not 1 <= limit <= 1000:
            raise HTTPException(400, "limit must be in [1, 1000]")
        return limit

    # The database readers below are ``async``: a query takes milliseconds (SQLite, read-only, indexed), so
    # running them on the event loop avoids a threadpool hop and GIL hand-offs per request. The model
    # endpoints (seconds) stay sync, in the threadpool.
    @app.get("/", response_class=HTMLResponse)
    async def index(q: str = "", sort: str = "density", dictionary: str = "", limit: int = 100) -> str:
        db = state.db()
        return pages.browser(db.search(q, dictionary=dictionary, sort=sort, limit=clamp_limit(limit)),
                             db.dictionaries(), q, sort, dictionary, search_index=db.search_index)

    @app.get("/api/features")
    async def api_features(q: str = "", limit: int = 50, sort: str = "density", dictionary: str = "",
                           offset: int = 0) -> Any:
        return _json(state.db().search(q, dictionary=dictionary, sort=sort, limit=clamp_limit(limit),
                                       offset=max(offset, 0)))

    def get_feature(dictionary: str, feature: int) -> dict[str, Any]:
        feat = state.db().feature(dictionary, feature)
        if feat is None:
            raise HTTPException(404, f"no feature {feature} of dictionary {dictionary!r}")
        return feat

    @app.get("/api/features/{dictionary}/{feature}")
    async def api_feature(dictionary: str, feature: int) -> Any:
        return _json(get_feature(dictionary, feature))

    @app.get("/api/dictionaries")
    async def api_dictionaries() -> Any:
        return _json(state.db().dictionaries())

    @app.get("/features/{dictionary}/{feature}", response_class=HTMLResponse)
    async def feature_html(dictionary: str, feature: int) -> Any:
        steer = f'<p><a href="/steer?dictionary={pages.esc(dictionary)}&amp;feature={int(feature)}">steer with ' \
                "this feature</a></p>"
        return HTMLResponse(feature_page(get_feature(dictionary, feature), pages.link, nav=pages.NAV).replace(
            "</main>", steer + "</main>", 1))

    def geometry_data(dictionary: str) -> tuple[list[dict[str, Any]], dict[int, str]]:
        db = state.db()
        if not any(d["name"] == dictionary for d in db.dictionaries()):
            raise HTTPException(404, f"no dictionary {dictionary!r}")
        return db.geometry(dictionary), db.explanations(dictionary)

    @app.get("/api/geometry/{dictionary}")
    async def api_geometry(dictionary: str) -> Any:
        from mechscope.features.geometry import cluster_summary

        rows, expl = geometry_data(dictionary)
        return _json({"dictionary": dictionary, "method": rows[0]["method"] if rows else None,
                      "feature": [r["feature"] for r in rows], "x": [r["x"] for r in rows],
                      "y": [r["y"] for r in rows], "cluster": [r["cluster"] for r in rows],
                      "clusters": cluster_summary(rows, expl)})

    @app.get("/geometry/{dictionary}", response_class=HTMLResponse)
    async def geometry_html(dictionary: str) -> Any:
        from mechscope.features.geometry import cluster_summary
        from mechscope.web.geometry_page import geometry_page

        rows, expl = geometry_data(dictionary)
        return HTMLResponse(geometry_page(dictionary, rows, cluster_summary(rows, expl), expl, pages.link, pages.NAV))

    @app.get("/prompt", response_class=HTMLResponse)
    def prompt_html() -> str:
        return pages.prompt_page()

    @app.post("/api/prompt")
    def api_prompt(body: PromptIn) -> dict[str, Any]:
        m = state.model()
        with state._lock:  # one forward at a time: the model's hooks are shared state
            return explore_prompt(m, body.text, top_k=body.top_k)

    @app.get("/steer", response_class=HTMLResponse)
    def steer_html(dictionary: str = "", feature: int = 0) -> str:
        return pages.steer_page(state.db().dictionaries(), dictionary, feature)

    @app.post("/api/steer")
    def api_steer(body: SteerIn) -> dict[str, Any]:
        rows = [d for d in state.db().dictionaries() if d["name"] == body.dictionary]
        if not rows:
            raise HTTPException(404, f"no dictionary {body.dictionary!r}")
        row = rows[0]
        if body.feature >= int(row["n_features"]):
            raise HTTPException(400, f"feature must be in [0, {row['n_features']})")
        m = state.model()
        steering = Steering(kind=row["kind"], hook=row["hook"], feature=body.feature, mode=body.mode,
                            value=body.value, dictionary=state.dictionary(row))
        with state._lock:
            base = generate_text(m, body.prompt, None, max_new_tokens=body.max_new_tokens)
            steered = generate_text(m, body.prompt, steering, max_new_tokens=body.max_new_tokens)
        return {"baseline": base, "steered": steered}

    @app.get("/static/{path:path}")
    def static(path: str) -> Any:
        target = _inside(STATIC, path)
        if target is None or not target.is_file():
            raise HTTPException(404, "not found")
        return FileResponse(target)

    @app.get("/favicon.ico")
    def favicon() -> Any:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/runs/{path:path}", response_class=HTMLResponse)
    def run_files(path: str = "", view: int = 0) -> Any:
        from mechscope.web import graph_page, runs_view

        if not path.strip("/"):
            return pages.runs_page([(r.name, f"/runs/{i}/") for i, r in enumerate(state.runs)])
        head, _, rest = path.partition("/")
        if not head.isdigit() or int(head) >= len(state.runs):
            raise HTTPException(404, "not found")
        target = _inside(state.runs[int(head)], rest)
        if target is None or not target.exists():
            raise HTTPException(404, "not found")
        if target.is_dir():
            base = state.runs[int(head)]
            listing = []
            for p in sorted(target.iterdir()):
                rel = (Path(rest) / p.name).as_posix()
                if _inside(base, rel) is not None:  # a symlink pointing outside is not listed
                    href = f"/runs/{head}/{quote(rel)}"
                    if p.suffix == ".json" and runs_view.sweep_result(p) is not None:
                        listing.append((p.name + " (heatmap)", href + "?view=1"))
                    elif p.name == "graph.json" and graph_page.graph_result(p) is not None:
                        listing.append((p.name + " (attribution graph)", href + "?view=1"))
                    listing.append((p.name + ("/" if p.is_dir() else ""), href + ("/" if p.is_dir() else "")))
            here = f"/runs/{head}/{quote(Path(rest).as_posix())}/" if rest.strip("/") else f"/runs/{head}/"
            return pages.runs_page(listing, before=runs_view.circuit_body(target, here) or "")
        if view and target.suffix == ".json":
            graph = graph_page.graph_result(target) if target.name == "graph.json" else None
            if graph is not None:
                db = state.db()
                labels = graph_page.feature_labels(graph, db.dictionaries(), db.explanations, pages.link)
                return HTMLResponse(graph_page.graph_page(graph, target.parent.name, labels, pages.NAV))
            result = runs_view.sweep_result(target)
            if result is None:
                raise HTTPException(404, "not a patching result or an attribution graph")
            return HTMLResponse(render_page("patching result", runs_view.sweep_body(result, target.name),
                                           nav=pages.NAV))
        # raw files: sandboxed, so an SVG or HTML file in a run directory cannot run scripts when opened directly
        return FileResponse(target, headers={"Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self' "
                                             "data:; style-src 'unsafe-inline'"})

    return app


ENV = "MECHSCOPE_SERVE"
"""Environment variable carrying ``create_app``'s arguments (JSON) to uvicorn worker processes."""


def app_from_env() -> Any:
    """The app described by ``$MECHSCOPE_SERVE`` (``{"db", "runs", "model"}``): uvicorn's factory for ``--workers``."""
    import json
    import os

    from mechscope.cli.common import load_model

    spec = json.loads(os.environ[ENV])

    def loader(name: str) -> Any:
        return load_model(spec.get("model") or name)

    return create_app(spec["db"], model_loader=loader, runs=spec.get("runs") or [])


__all__ = ["create_app", "app_from_env", "ENV"]
