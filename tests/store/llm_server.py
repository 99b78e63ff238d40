"""An OpenAI-compatible LLM server on 127.0.0.1 for the cluster tests: it answers each question
with the first label the sidecar allows, records the questions it was asked, and takes questions
holding ``hang_on`` without ever answering them (a node whose LLM call never returns)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LlmServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hang_on: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hang_on = hang_on
        self.questions: list[str] = []
        self.hanging = threading.Event()  # set once a question is held
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="llm-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def asked(self, question: str) -> None:
        with self._lock:
            self.questions.append(question)

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: LlmServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = body["messages"][-1]["content"]
        if self.server.hang_on is not None and self.server.hang_on in question:
            self.server.hanging.set()
            self.server.stopping.wait(120)
            return
        self.server.asked(question)
        choice = body["structured_outputs"]["choice"][0]
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": choice}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
