"""`transferkit serve MODEL`: an HTTP JSON API over a model folder (FastAPI + uvicorn).

    POST /predict   {"texts": [...]} | {"text": "..."} | {"images": [base64, ...]} | {"image": base64}
                    or multipart/form-data with image files (fields "file"/"files")
                    -> {"predictions": [{"label", "probabilities"} | {"label", "scores"} | {"value"}], ...}
    GET  /health    -> {"status": "ok", ...}
    GET  /metadata  -> classes, task, metrics and the model card's facts

Concurrent requests are micro-batched (`batcher.py`). Bad input — a wrong type, an undecodable image, an
empty text, too many items, a body over the limit — gets a 4xx with a one-line {"error": ...}; nothing a client
sends takes the server down.
"""

import base64
import binascii
import io
import time
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import Request  # resolved at runtime by FastAPI: this module takes no postponed annotations

from transferkit.errors import DataError
from transferkit.serve.batcher import MicroBatcher

MAX_BODY_BYTES = 16 * 2**20
MAX_ITEMS = 256
#: pixels one image may decode to (a compressed image can be tiny on the wire and huge in memory)
MAX_PIXELS = 40_000_000


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before it is read into memory."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(send, self.limit)
            return
        seen, too_large, started = 0, False, False

        async def counted() -> dict:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # stop reading: the app sees the client gone and its answer is dropped
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: dict) -> None:
            nonlocal started
            if too_large:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await _too_large(send, self.limit)


async def _too_large(send: Any, limit: int) -> None:
    import json

    body = json.dumps({"error": f"request body over {limit} bytes: send fewer or smaller items"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _decode_image(data: bytes, where: str) -> Any:
    """A PIL image from the bytes of an upload; a 400 names what is wrong (unreadable, too large)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size  # read from the header, before any pixel is decoded
            if w * h > MAX_PIXELS:
                raise DataError(f"{where} is {w}×{h} pixels; send images of at most {MAX_PIXELS:,} pixels")
            im.load()
            return im.copy()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{where} is not a readable image ({type(e).__name__})") from None


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise DataError(f"{where} must be a base64 string, not {type(value).__name__}")
    try:
        return base64.b64decode(value.split(",", 1)[-1] if value.startswith("data:") else value, validate=True)
    except (binascii.Error, ValueError):
        raise DataError(f"{where} is not valid base64") from None


def items_from_json(doc: Any, modality: str, max_items: int) -> list:
    """The items of a JSON request body, checked; a DataError (400) names what is wrong."""
    if not isinstance(doc, dict):
        raise DataError("the body must be a JSON object such as {\"texts\": [...]} or {\"images\": [...]}")
    key, one = ("texts", "text") if modality == "text" else ("images", "image")
    if one in doc:
        values = [doc[one]]
    elif key in doc:
        values = doc[key]
        if not isinstance(values, list):
            raise DataError(f"\"{key}\" must be a list")
    else:
        raise DataError(f"this model reads {modality}: send {{\"{key}\": [...]}} or {{\"{one}\": ...}}")
    if not values:
        raise DataError(f"\"{key}\" is empty: send at least one item")
    if len(values) > max_items:
        raise DataError(f"{len(values)} items in one request; send at most {max_items}")
    if modality == "text":
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise DataError(f"{key}[{i}] is {type(v).__name__}, not a string")
            if not v.strip():
                raise DataError(f"{key}[{i}] is empty: send some text")
        return values
    return [_decode_image(_b64(v, f"{key}[{i}]"), f"{key}[{i}]") for i, v in enumerate(values)]


def create_app(model: Any, *, max_batch: int = 32, max_wait_ms: float = 5.0, max_body_bytes: int = MAX_BODY_BYTES,
               max_items: int = MAX_ITEMS, batch_size: int = 64) -> Any:
    """The FastAPI app serving the loaded model `model` (`transferkit.model.load_model`)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    started = time.time()
    batcher = MicroBatcher(lambda items: model.outputs(items, batch_size), max_batch=max_batch,
                           max_wait_ms=max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="transferkit model", lifespan=lifespan)
    info = model.info

    @app.exception_handler(DataError)
    async def bad_input(request: Request, exc: DataError) -> JSONResponse:
        return JSONResponse({"error": str(exc).splitlines()[0]}, status_code=400)

    @app.exception_handler(TimeoutError)
    async def overloaded(request: Request, exc: TimeoutError) -> JSONResponse:
        return JSONResponse({"error": "the model did not answer in time: the server is overloaded, retry later"},
                            status_code=503)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"the model failed on this request ({type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0][:200] if str(exc) else ''})"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        return JSONResponse({"error": f"{'.'.join(str(p) for p in first.get('loc', []))}: {first.get('msg', 'bad')}"},
                            status_code=422)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "kind": info.kind, "uptime_s": round(time.time() - started, 1),
                "batches": batcher.batches, "items": batcher.items}

    @app.get("/metadata")
    async def metadata() -> dict:
        b = info.backbone or {}
        return {"kind": info.kind, "task": info.task, "modality": info.modality, "classes": info.class_names,
                "outputs": "probabilities" if model.has_proba else ("values" if info.task == "regression" else
                                                                     "scores"),
                "precision": info.precision, "metrics": info.metrics, "backbone": b.get("spec"),
                "data": {k: v for k, v in (info.data or {}).items() if k in ("name", "n", "fingerprint")},
                "cost": info.cost, "created": info.created, "max_items": max_items, "max_batch": max_batch}

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        kind = request.headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            if info.modality != "image":
                raise DataError("multipart uploads are for image models: send {\"texts\": [...]} as JSON")
            form = await request.form()
            files = [f for k in ("file", "files") for f in form.getlist(k) if hasattr(f, "read")]
            if not files:
                raise DataError("the form holds no image file: send it in a field named \"file\" or \"files\"")
            if len(files) > max_items:
                raise DataError(f"{len(files)} files in one request; send at most {max_items}")
            items = [_decode_image(await f.read(), f"file {f.filename!r}") for f in files]
        else:
            try:
                doc = await request.json()
            except ValueError:
                raise DataError("the body is not JSON: send {\"texts\": [...]} or {\"images\": [...]}") from None
            items = items_from_json(doc, info.modality, max_items)
        out = await batcher.submit(items)
        return JSONResponse({"predictions": [_prediction(model, row) for row in out], "kind": info.kind})

    return BodyLimit(app, max_body_bytes)


def _number(v: Any) -> float | None:
    """A JSON number, or null for a value JSON cannot hold (a class the head never saw scores -inf)."""
    v = float(v)
    return v if np.isfinite(v) else None


def _prediction(model: Any, row: np.ndarray) -> dict:
    info = model.info
    if not info.is_classifier:
        return {"value": _number(row)}
    key = "probabilities" if model.has_proba else "scores"
    return {"label": info.class_names[int(np.argmax(row))], key: {c: _number(v) for c, v in zip(info.class_names,
                                                                                                row)}}
