"""The playground page (GET /) in a real headless Chromium, driven over the Chrome DevTools Protocol.

Chromium loads the page from the session's Chorus on Ray Serve, a key is typed in, the voices are
loaded, "Speak" is clicked with a real (CDP) mouse click, and the page streams server-sent events,
plays the PCM deltas through Web Audio and highlights each word while it is spoken. Headless Chromium
with no sound device plays into a fake output whose clock runs in real time, so AudioContext.currentTime
advancing past the audio's duration shows the audio was played, not just decoded.
`--autoplay-policy=no-user-gesture-required` is needed for the AudioContext to run at all.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TEXT = "The quick brown fox jumps over the lazy dog. Then it rests in the warm sun."
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--remote-debugging-port=0",
    "--no-first-run", "--no-default-browser-check", "--no-proxy-server", "--disable-extensions",
    "--disable-background-networking", "--disable-dev-shm-usage", "--window-size=960,1000",
)


class Page:
    """One browser tab over CDP: call methods, evaluate JavaScript, click and type like a user."""

    def __init__(self, ws):
        self.ws, self._id, self.exceptions = ws, 0, []

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("method") == "Runtime.exceptionThrown":
                self.exceptions.append(message["params"]["exceptionDetails"])
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 10, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or expression}; "
                                     f"status line: {self.status()!r}")
            time.sleep(0.05)

    def status(self) -> str:
        return self.eval("document.getElementById('status').textContent")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && !!window.chorusState", what="the page to load")

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (a user gesture, unlike element.click())."""
        box = self.eval(f"""(() => {{ const el = document.querySelector({json.dumps(selector)});
            el.scrollIntoView({{block: 'center'}}); const r = el.getBoundingClientRect();
            return {{x: r.x + r.width / 2, y: r.y + r.height / 2}}; }})()""")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        """Focus the field, select what is in it and type `text` over it."""
        self.eval(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); el.focus(); el.select(); }})()")
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path


@pytest.fixture
def page(tmp_path) -> Iterator[Page]:
    """A headless Chromium with one tab; the browser (its whole process group) is killed afterwards."""
    from websockets.sync.client import connect

    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: run tools/bootstrap.sh (or apt-get install -y chromium)",
                    pytrace=False)
    profile = tmp_path / "chromium-profile"
    log = tmp_path / "chromium.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"chromium did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        port = port_file.read_text().splitlines()[0]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        with connect(url, max_size=None, open_timeout=10) as ws:
            tab = Page(ws)
            tab.call("Page.enable")
            tab.call("Runtime.enable")
            yield tab
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def voice_options(page: Page) -> dict[str, dict]:
    return {o["value"]: o for o in page.eval(
        "[...document.querySelectorAll('#voice option')].map(o => ({value: o.value, text: o.textContent, "
        "disabled: o.disabled}))")}


def load_voices(page: Page, key: str) -> dict[str, dict]:
    page.type("#key", key)
    page.click("#load")
    page.wait("!document.getElementById('load').disabled && /voices? loaded|error/.test("
              "document.getElementById('status').textContent + document.getElementById('status').className)",
              what="the voices to load")
    return voice_options(page)


def test_speak_streams_plays_and_highlights_every_word(serving, page, tmp_path):
    key = serving.keys["acme"]
    page.open(serving.url + "/")
    assert page.eval("document.title") == "Chorus playground"
    options = load_voices(page, key)
    assert {"default", "bright"} <= set(options), options
    assert not options["default"]["disabled"] and not options["bright"]["disabled"], options
    assert "bright (v1, Ready)" in options["bright"]["text"]
    assert page.eval("sessionStorage.getItem('chorus.key')") == key

    page.eval("(() => { const s = document.getElementById('voice'); s.value = 'bright';"
              " s.dispatchEvent(new Event('change')); })()")
    assert page.eval("document.getElementById('voice').value") == "bright"
    page.type("#text", TEXT)
    page.click("#speak")

    # while it plays, the page highlights the word being spoken
    current_seen = set()
    deadline = time.monotonic() + 30
    while not page.eval("window.chorusState.done"):
        assert time.monotonic() < deadline, f"not done after 30 s; status line: {page.status()!r}"
        current = page.eval("[...document.querySelectorAll('#words span.current')].map(e => e.textContent)")
        if current and not current_seen:
            page.screenshot(tmp_path / "playing.png")
        current_seen.update(current)
        time.sleep(0.05)

    s = page.eval("""(() => { const s = window.chorusState; return {deltas: s.deltas,
        samples: s.samplesScheduled, seconds: s.audioSeconds, words: s.words, highlighted: s.wordsHighlighted,
        done: s.done, error: s.error, firstAudioMs: s.firstAudioMs, start: s.playbackStart,
        now: s.audioContext.currentTime, state: s.audioContext.state,
        spans: [...document.querySelectorAll('#words span')].map(e => e.textContent),
        spoken: document.querySelectorAll('#words span.spoken').length,
        status: document.getElementById('status').textContent,
        statusError: document.getElementById('status').classList.contains('error')}; })()""")
    page.screenshot(tmp_path / "playground.png")

    assert s["error"] is None and not s["statusError"], s
    assert s["deltas"] > 0 and s["samples"] > 0, s
    assert s["seconds"] == pytest.approx(s["samples"] / 24_000)
    assert s["seconds"] > 1.0, s  # two sentences
    n_words = len(TEXT.split())
    assert len(s["spans"]) == s["words"] == n_words, s["spans"]
    assert [w.lower() for w in s["spans"]] == [w.strip(".,").lower() for w in TEXT.split()]
    assert s["highlighted"] == n_words and s["spoken"] == n_words, s
    assert current_seen, "no word was highlighted as current during playback"
    # the audio really played: the audio clock ran from the first buffer's start past the audio's end
    assert s["state"] == "running"
    assert s["now"] - s["start"] >= s["seconds"], s
    assert s["firstAudioMs"] is not None and 0 < s["firstAudioMs"] < 30_000, s
    assert f"first audio after {s['firstAudioMs']} ms" in s["status"], s["status"]
    assert not page.exceptions, page.exceptions


def test_wrong_key_shows_the_api_error_in_the_status_line(serving, page, tmp_path):
    page.open(serving.url + "/")
    load_voices(page, "chorus_" + "x" * 43)
    page.screenshot(tmp_path / "wrong-key.png")
    assert page.status() == "Incorrect API key provided."
    assert page.eval("document.getElementById('status').classList.contains('error')")
    assert page.eval("document.getElementById('speak').disabled")

    # a key that stops working between loading voices and speaking: Speak shows the error too
    load_voices(page, serving.keys["acme"])
    page.type("#key", "chorus_" + "y" * 43)
    page.click("#speak")
    page.wait("window.chorusState.done", what="speak to end")
    assert page.eval("window.chorusState.error") == "Incorrect API key provided."
    assert page.status() == "Incorrect API key provided."
    assert page.eval("window.chorusState.deltas") == 0
    assert not page.exceptions, page.exceptions


def test_voices_that_are_not_ready_are_listed_but_disabled(serving, page):
    page.open(serving.url + "/")
    options = load_voices(page, serving.keys["globex"])
    assert set(options) == {"default", "deep", "pending"}, options
    assert options["pending"]["disabled"] and "Training" in options["pending"]["text"], options
    assert not options["deep"]["disabled"]
    assert page.eval("document.getElementById('voice').value") in ("default", "deep")
