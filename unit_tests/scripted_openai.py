"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for the remote-model unit tests.

It is a real HTTP server (the client's whole stack runs: httpx, the OpenAI SDK, SSE
streaming), but its answers are scripted, not generated: an engine stand-in for testing the
plumbing and the error paths in milliseconds. The real engine (vLLM) is exercised in
integration_tests/test_served_engine.py.

Each served model answers ``"<model> says: <last line of the last user message>"``; a
request with a ``response_format`` gets ``structured_reply``. ``script[model]`` makes a
model slow (``delay``) or fail (``status``); a model not in ``script`` gets vLLM's 404.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    delay: float = 0.0
    status: int = 200


@dataclass
class Request:
    model: str
    body: dict[str, Any]
    authorization: str | None


@dataclass
class ScriptedOpenAIServer:
    script: dict[str, Behaviour] = field(default_factory=lambda: {"echo": Behaviour()})
    structured_reply: str = "{}"
    requests: list[Request] = field(default_factory=list)
    peak_in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


def _handler(server: ScriptedOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            if self.path != "/v1/chat/completions":
                return self._json(404, {"detail": "Not Found"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            model = body["model"]
            server.requests.append(Request(model, body, self.headers.get("Authorization")))
            behaviour = server.script.get(model)
            if behaviour is None:
                message = f"The model `{model}` does not exist."
                error = {"message": message, "type": "NotFoundError", "param": "model"}
                return self._json(404, {"error": error | {"code": 404}})
            server._enter()
            try:
                time.sleep(behaviour.delay)
            finally:
                server._leave()
            if behaviour.status != 200:
                error = {"message": f"scripted failure {behaviour.status}", "type": "Error"}
                return self._json(behaviour.status, {"error": error})
            if "response_format" in body:
                text = server.structured_reply
            else:
                last = [m for m in body["messages"] if m["role"] == "user"][-1]["content"]
                text = f"{model} says: {last.strip().splitlines()[-1]}"
            if body.get("stream"):
                return self._stream(model, text)
            message = {"role": "assistant", "content": text}
            return self._json(
                200,
                {
                    "id": "chatcmpl-scripted",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
                },
            )

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, model: str, text: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            words = text.split(" ")
            for i, word in enumerate(words):
                delta = {"content": word + (" " if i < len(words) - 1 else "")}
                chunk = {
                    "id": "chatcmpl-scripted",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                }
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

    return Handler
