"""An OpenAI-compatible LLM server on 127.0.0.1 for the bootstrap tests: it answers each question
with the label of the first rule whose words are in the log line, at the rule's confidence (as
token log-probabilities, which the vLLM backend turns back into the confidence), and counts the
questions it was asked. A line no rule matches gets the last allowed label (the fallback label).
Asked in free text (no ``structured_outputs``: bootstrap having a worked example written for a
label, known by its description) it answers "Log line: <the words of the label's first rule> ..."
and keeps the label."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_LINE = re.compile(r"<log>\n(.*)\n</log>", re.DOTALL)
_KIND = re.compile(r"Kind of event: (.*)\.\n")


class StubLlm(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, rules: Sequence[tuple[str, str, float]], descriptions: Mapping[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.rules = list(rules)
        self.descriptions = dict(descriptions or {})  # label -> description, to know what to write
        self.lines: list[str] = []  # the log lines asked about, in order
        self.writes: list[str] = []  # the labels it wrote an example for
        self.prompts: list[str] = []  # every classification question, whole
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, name="stub-llm", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def calls(self) -> int:
        return len(self.lines)

    def answer(self, line: str, allowed: Sequence[str]) -> tuple[str, float]:
        with self._lock:
            self.lines.append(line)
        for words, label, confidence in self.rules:
            if words in line and label in allowed:
                return label, confidence
        return allowed[-1], 0.8

    def write(self, question: str) -> str:
        match = _KIND.search(question)
        described = match.group(1) if match else ""
        label = next((lab for lab, text in self.descriptions.items() if text.rstrip(".") == described), "?")
        with self._lock:
            self.writes.append(label)
        words = next((w for w, rule_label, _ in self.rules if rule_label == label), "something")
        return f'Log line: "{words} happened for item 42"'

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: StubLlm

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._send({"data": [{"id": "stub"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = body["messages"][-1]["content"]
        if "structured_outputs" not in body:
            text = self.server.write(question)
            self._send({"choices": [{"message": {"role": "assistant", "content": text}}]})
            return
        with self.server._lock:
            self.server.prompts.append(json.dumps(body["messages"]))
        match = _LINE.search(question)
        line = json.loads(match.group(1)) if match else question
        label, confidence = self.server.answer(line, body["structured_outputs"]["choice"])
        logprobs = {"content": [{"token": label, "logprob": math.log(confidence)}]}
        self._send({"choices": [{"message": {"role": "assistant", "content": label}, "logprobs": logprobs}]})

    def _send(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
