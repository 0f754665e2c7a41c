"""The OpenAI-compatible images server: FastAPI routes over the generation engine, run by uvicorn.

Routes: ``POST /v1/images/generations`` (JSON), ``POST /v1/images/edits`` (multipart), ``GET /v1/models``
(bearer auth when a key is set); ``GET /v1/images/files/{name}`` (the ``url`` responses: unguessable
server-chosen names, no auth, as a browser must fetch them), ``/health/live``, ``/health/ready``, ``/metrics``.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import time
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from .auth import check_bearer
from .engine import EngineStopped, GenerationEngine, JobCancelled, QueueFull
from .errors import ApiError
from .metrics import ServerMetrics
from .schemas import ImageRequest, parse_image, parse_json_body, parse_request
from .settings import ServerConfig
from .storage import ImageStore

#: request paths counted under their own label in ``mindglm_requests`` (all others: "other")
_ENDPOINTS = ("/v1/images/generations", "/v1/images/edits", "/v1/models", "/health/live", "/health/ready",
              "/metrics")
#: room for the edit form's text fields on top of its images
_FORM_OVERHEAD = 1024**2


def load_pipeline(cfg: ServerConfig):
    """Runs in the engine's worker thread: MindSpore is set up and used by that thread only."""
    from ..pipeline.glm_image_pipeline import GlmImagePipeline, SizeLimits
    from ..runtime import default_compute_dtype, setup_runtime

    device = setup_runtime(cfg.device)
    return GlmImagePipeline.from_pretrained(cfg.model, dtype=default_compute_dtype(device),
                                            limits=SizeLimits(cfg.min_side, cfg.max_side))


class _RequestGuard:
    """ASGI middleware: caps body bytes (declared or streamed) before any parsing, counts answers by status."""

    def __init__(self, app, max_body: int, metrics: ServerMetrics):
        self.app, self.max_body, self.metrics = app, max_body, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in _ENDPOINTS else "other"
        status = {"code": 0}

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        too_large = ApiError(413, f"the request body exceeds {self.max_body} bytes", "request_too_large")
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await too_large.response()(scope, receive, counting_send)
        else:
            seen = {"bytes": 0}

            async def capped_receive():
                message = await receive()
                if message["type"] == "http.request":
                    seen["bytes"] += len(message.get("body", b""))
                    if seen["bytes"] > self.max_body:
                        raise too_large
                return message

            await self.app(scope, capped_receive, counting_send)
        self.metrics.requests.labels(endpoint, str(status["code"] or 499)).inc()


def create_app(cfg: ServerConfig, load: Callable[[], object] | None = None,
               on_fatal: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The app with its own metrics, output store and engine (started and stopped by the app's lifespan)."""
    metrics = ServerMetrics()
    store = ImageStore(cfg.output_dir)
    engine = GenerationEngine(cfg, metrics, load or functools.partial(load_pipeline, cfg), on_fatal)
    started = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        await asyncio.to_thread(engine.shutdown)

    app = FastAPI(title="mindglm-image", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.add_middleware(_RequestGuard, max_body=cfg.max_images * cfg.max_image_bytes + _FORM_OVERHEAD, metrics=metrics)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return err.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        return ApiError(err.status_code, f"{request.method} {request.url.path}: {err.detail}",
                        codes.get(err.status_code, "invalid_request")).response()

    def authorize(request: Request) -> None:
        check_bearer(request.headers.get("authorization"), cfg.api_key)

    async def answer(request: Request, req: ImageRequest) -> Response:
        """Queue ``req``, wait for it (watching the client and the timeout), return OpenAI's image response."""
        try:
            job = engine.submit(req)
        except QueueFull as err:
            raise ApiError(429, str(err), "queue_full", headers={"Retry-After": str(err.retry_after)}) from None
        except EngineStopped as err:
            raise ApiError(503, str(err), "unavailable") from None
        waiting = asyncio.wrap_future(job.future)
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({waiting, gone}, timeout=cfg.request_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if waiting not in done:
            engine.cancel(job, "disconnect" if gone in done else "timeout")
            waiting.cancel()
            if gone in done:
                return Response(status_code=499)  # nobody reads it; logged and counted as 499
            raise ApiError(504, f"the request was not finished within {cfg.request_timeout_s} s", "timeout")
        try:
            result = waiting.result()
        except EngineStopped as err:
            raise ApiError(503, str(err), "unavailable") from None
        except JobCancelled as err:
            raise ApiError(503, f"the request was dropped ({err})", "unavailable") from None
        except Exception as err:  # noqa: BLE001 - the pipeline's failure, reported to this client only
            raise ApiError(500, f"generation failed: {err}", "generation_failed") from None
        metrics.images.inc(len(result.images))
        if req.response_format == "url":
            base = (cfg.public_base_url or str(request.base_url)).rstrip("/")
            names = await asyncio.to_thread(lambda: [store.save(img) for img in result.images])
            data = [{"url": f"{base}/v1/images/files/{name}"} for name in names]
        else:
            data = [{"b64_json": b64} for b64 in await asyncio.to_thread(_png_base64, result.images)]
        return JSONResponse({"created": int(time.time()), "data": data, "seed": req.seed})

    @app.post("/v1/images/generations")
    async def generations(request: Request) -> Response:
        authorize(request)
        return await answer(request, parse_request(parse_json_body(await request.body()), cfg))

    @app.post("/v1/images/edits")
    async def edits(request: Request) -> Response:
        authorize(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(400, "edits take multipart/form-data with 'image' file(s) and 'prompt'", "invalid_request")
        try:
            form = await request.form(max_files=cfg.max_images + 1, max_fields=64,
                                      max_part_size=4 * cfg.max_prompt_chars + 1024)
        except HTTPException as err:
            raise ApiError(400, f"the multipart form cannot be read: {err.detail}", "invalid_request") from None
        try:
            uploads = form.getlist("image") + form.getlist("image[]")
            if not uploads:
                raise ApiError(400, "missing required parameter 'image' (one or several image files)",
                               "missing_required_parameter", "image")
            if len(uploads) > cfg.max_images:
                raise ApiError(400, f"{len(uploads)} images; the limit is {cfg.max_images}", "invalid_value", "image")
            if "mask" in form:
                raise ApiError(400, "masks are not supported by GLM-Image; describe the edit in the prompt",
                               "unsupported_value", "mask")
            images = []
            for upload in uploads:
                if not isinstance(upload, UploadFile):
                    raise ApiError(400, "'image' must be a file upload, not a text field", "invalid_image", "image")
                data = await upload.read(cfg.max_image_bytes + 1)
                images.append(await asyncio.to_thread(parse_image, data, cfg, upload.filename or "image"))
            values = {k: v for k, v in form.multi_items() if isinstance(v, str) and not k.startswith("image")}
        finally:
            await form.close()
        return await answer(request, parse_request(values, cfg, images))

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        authorize(request)
        return JSONResponse({"object": "list", "data": [
            {"id": cfg.model_name, "object": "model", "created": started, "owned_by": "mindglm-image"}]})

    @app.get("/v1/images/files/{name}", name="image_file")
    async def image_file(name: str) -> Response:
        path = store.path(name)
        if path is None:
            raise ApiError(404, f"no image named {name!r}", "not_found")
        return FileResponse(path, media_type="image/png")

    @app.get("/health/live")
    async def live() -> Response:
        return JSONResponse({"status": "alive"})

    @app.get("/health/ready")
    async def ready() -> Response:
        if not engine.ready:
            raise ApiError(503, engine.error or f"the server is {engine.state}", "not_ready")
        return JSONResponse({"status": "ready", "model": cfg.model_name})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


async def _disconnected(request: Request) -> None:
    """Returns when the client hangs up (the body is read, so the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _png_base64(images) -> list[str]:
    out = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


def serve(cfg: ServerConfig, log_level: str = "info") -> int:
    """Run the server until SIGINT/SIGTERM; 1 if the model could not be loaded."""
    fatal: list[BaseException] = []

    def on_fatal(err: BaseException) -> None:
        fatal.append(err)
        server.should_exit = True

    app = create_app(cfg, on_fatal=on_fatal)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.engine.begin_shutdown()  # queued requests drain, then get 503; new ones get 503 at once
            super().handle_exit(sig, frame)

    server = _Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=log_level, lifespan="on"))
    server.run()
    return 1 if fatal else 0
