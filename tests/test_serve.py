"""The images server, started for real (``mindglm-image serve`` in a child process on a loopback port) with
the tiny model, called with the official ``openai`` client and raw HTTP. One server for the module; the
last test shuts it down with SIGTERM."""
from __future__ import annotations

import base64
import io
import json
import signal
import threading

import numpy as np
import openai
import pytest
from PIL import Image

from mindglm_image.serving.child_server import ChildServer, read_response
from mindglm_image.tiny_model import make_tiny_model

KEY = "test-key"
LIMITS = {"max_prompt_chars": 200, "max_n": 3, "max_images": 2, "max_image_bytes": 60_000,
          "max_image_pixels": 128 * 128, "queue_size": 2, "shutdown_grace_s": 0.0}
GEN = "/v1/images/generations"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    model = make_tiny_model(root / "tiny", progress=False)
    (root / "serve.json").write_text(json.dumps(LIMITS))
    srv = ChildServer(["--model", str(model), "--config", str(root / "serve.json"), "--output-dir", str(root / "out"),
                       "--min-side", "32", "--max-side", "256", "--default-size", "64x64", "--default-steps", "2",
                       "--log-level", "warning"], api_key=KEY)
    srv.out_dir = root / "out"
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=300)


def _png(size: tuple[int, int], seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def _multipart(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> tuple[bytes, dict]:
    boundary = "mindglm-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
              f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n" for field, name, data in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_generate_sizes_and_seeds_reproduce(client):
    def run(seed):
        out = client.images.generate(model="glm-image", prompt='a sign that says "hi"', size="96x64", n=2,
                                     extra_body={"seed": seed, "num_inference_steps": 2})
        return [_decode(d.b64_json) for d in out.data]

    a, b, c = run(3), run(3), run(4)
    assert len(a) == 2 and a[0].shape == (64, 96, 3) and a[0].std() > 1
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.abs(a[0].astype(int) - a[1]).max() > 0      # n images differ by their noise
    assert np.abs(a[0].astype(int) - c[0]).max() > 0      # another seed, another image


def test_edit_with_two_images_as_url(client, server):
    out = client.images.edit(image=[("a.png", _png((96, 64)), "image/png"), ("b.png", _png((64, 64), 1), "image/png")],
                             prompt="make it purple", size="64x64", response_format="url",
                             extra_body={"seed": 1, "num_inference_steps": 2})
    url = out.data[0].url
    name = url.rsplit("/", 1)[1]
    assert url.startswith(f"{server.url}/v1/images/files/") and [p.name for p in server.out_dir.iterdir()] == [name]
    status, headers, body = server.request("GET", f"/v1/images/files/{name}", headers={})  # capability url, no key
    assert status == 200 and headers["content-type"] == "image/png"
    assert np.asarray(Image.open(io.BytesIO(body))).shape == (64, 64, 3)
    for path in ("/v1/images/files/..%2F..%2Fetc%2Fpasswd", "/v1/images/files/serve.json", f"/v1/images/files/{name[:-4]}"):
        assert server.request("GET", path, headers={})[0] == 404


@pytest.mark.parametrize("body, status, code, param", [
    ({"prompt": "x", "size": "65x64"}, 400, "invalid_size", "size"),
    ({"prompt": "x", "size": "512x512"}, 400, "invalid_size", "size"),
    ({"prompt": "x", "size": "big"}, 400, "invalid_size", "size"),
    ({"prompt": "x", "n": 0}, 400, "invalid_value", "n"),
    ({"prompt": "x", "n": 4}, 400, "invalid_value", "n"),
    ({"prompt": "x", "n": "two"}, 400, "invalid_type", "n"),
    ({"prompt": "x", "model": "dall-e-3"}, 404, "model_not_found", "model"),
    ({"size": "64x64"}, 400, "missing_required_parameter", "prompt"),
    ({"prompt": "x" * 201}, 400, "string_above_max_length", "prompt"),
    ({"prompt": "x", "response_format": "gif"}, 400, "invalid_value", "response_format"),
    ({"prompt": "x", "num_inference_steps": 1000}, 400, "invalid_value", "num_inference_steps"),
    ({"prompt": "x", "top_p": 0}, 400, "invalid_value", "top_p"),
    (b"{not json", 400, "invalid_json", None),
    (b"[1, 2]", 400, "invalid_json", None),
])
def test_bad_generation_requests(server, body, status, code, param):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, _, raw = server.request("POST", GEN, data, server.headers(**{"Content-Type": "application/json"}))
    error = json.loads(raw)["error"]
    assert (got, error["code"], error["param"]) == (status, code, param) and error["message"]
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert server.request("GET", "/health/ready")[0] == 200


def test_bad_edit_requests(server):
    flat = io.BytesIO()
    Image.new("RGB", (256, 256), "white").save(flat, format="PNG")  # few bytes, too many pixels
    cases = [
        ([("image", "notes.txt", b"just text")], 400, "invalid_image"),
        ([("image", "big.png", _png((160, 128)))], 413, "image_too_large"),       # > 60 kB
        ([("image", "wide.png", flat.getvalue())], 400, "image_too_large"),      # > 128 * 128 pixels
        ([], 400, "missing_required_parameter"),
        ([("image", f"{i}.png", _png((32, 32))) for i in range(3)], 400, "invalid_value"),
    ]
    for files, status, code in cases:
        body, headers = _multipart({"prompt": "x", "size": "64x64"}, files)
        got, _, raw = server.request("POST", "/v1/images/edits", body, server.headers(**headers))
        assert (got, json.loads(raw)["error"]["code"]) == (status, code), (files[:1], raw)
    too_big = b"0" * (2 * LIMITS["max_image_bytes"] + 1024**2 + 1)
    got, _, raw = server.request("POST", "/v1/images/edits", too_big, server.headers(**headers))
    assert (got, json.loads(raw)["error"]["code"]) == (413, "request_too_large")
    assert server.request("GET", "/health/live")[0] == 200


def test_auth(server, client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        status, _, raw = server.request("POST", GEN, {"prompt": "x"}, headers)
        assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.images.generate(prompt="x", size="64x64")
    assert [m.id for m in client.models.list()] == ["glm-image"]


def test_health_and_metrics(server):
    assert server.request("GET", "/health/live", headers={})[0] == 200
    assert json.loads(server.request("GET", "/health/ready", headers={})[2])["status"] == "ready"
    assert server.metric("mindglm_images_generated_total") >= 7
    assert server.metric("mindglm_requests_total", 'endpoint="/v1/images/generations",status="400"') >= 10
    assert server.metric("mindglm_stage_seconds_count", 'stage="denoise"') >= 4
    assert server.metric("mindglm_images_per_second") > 0


def test_queue_full_gives_429_and_a_disconnect_frees_its_slot(server):
    busy = server.open_generation({"prompt": "busy", "size": "128x128", "num_inference_steps": 2})  # compiles: slow
    server.wait_metric("mindglm_running_requests", 1)
    queued = [server.open_generation({"prompt": f"q{i}", "num_inference_steps": 3 + i}) for i in range(2)]
    server.wait_metric("mindglm_queue_depth", 2)
    status, headers, raw = server.request("POST", GEN, {"prompt": "one too many"}, server.headers())
    assert status == 429 and json.loads(raw)["error"]["code"] == "queue_full" and int(headers["retry-after"]) >= 1
    queued.pop().close()                                   # this client goes away while waiting
    server.wait_metric("mindglm_queue_depth", 1)
    assert server.metric("mindglm_requests_dropped_total", 'reason="disconnect"') == 1
    late = server.open_generation({"prompt": "now there is room", "num_inference_steps": 2})
    assert [read_response(s)[0] for s in (busy, queued[0], late)] == [200, 200, 200]


def test_sigterm_finishes_the_running_request_and_fails_the_queued_ones(server):
    """Grace 0 s: the running batch completes, queued requests get an explicit 503, then the app shuts down
    and the process ends by the signal (uvicorn re-raises it after its clean shutdown)."""
    busy = server.open_generation({"prompt": "busy", "size": "128x96", "num_inference_steps": 2})  # compiles: slow
    server.wait_metric("mindglm_running_requests", 1)
    queued = [server.open_generation({"prompt": f"q{i}", "num_inference_steps": 3 + i}) for i in range(2)]
    server.wait_metric("mindglm_queue_depth", 2)
    results: dict = {}
    reader = threading.Thread(target=lambda: results.update(
        {i: read_response(s) for i, s in enumerate([busy, *queued])}))
    reader.start()
    assert server.stop(signal.SIGTERM) == -signal.SIGTERM
    reader.join(60)
    assert results[0][0] == 200 and _decode(json.loads(results[0][1])["data"][0]["b64_json"]).shape == (96, 128, 3)
    for status, raw in (results[1], results[2]):
        assert status == 503 and json.loads(raw)["error"]["code"] == "unavailable"
    assert "Traceback" not in server.log()
