"""`helm test`: synthesise one sentence through the serving Service with a tenant's API key.

Standard library only. The key comes from API_KEY, or from the test tenant's Secret (the test's
ServiceAccount owns the tenant, and owners may get the key Secret). The Service is found through
the service-link variables Kubernetes injects (no cluster DNS needed), else its DNS name.
"""

import base64
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
DEADLINE = time.monotonic() + float(os.environ.get("TIMEOUT_S", "180"))


def log(message):
    print(f"[helm-test] {message}", flush=True)


def retry(what, attempt):
    """Call attempt() until it returns a value, or fail at the deadline with its last reason."""
    reason = "not tried"
    while time.monotonic() < DEADLINE:
        value, reason = attempt()
        if value is not None:
            return value
        time.sleep(2)
    sys.exit(f"[helm-test] FAILED: {what}: {reason}")


def api_key():
    if os.environ.get("API_KEY"):
        return os.environ["API_KEY"].strip()
    namespace = os.environ["TENANT_NAMESPACE"]
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    host = f"[{host}]" if ":" in host else host
    url = f"https://{host}:{os.environ['KUBERNETES_SERVICE_PORT']}/api/v1/namespaces/{namespace}/secrets/chorus-api-key"
    context = ssl.create_default_context(cafile=f"{SA}/ca.crt")

    def attempt():
        with open(f"{SA}/token") as f:  # re-read: the projected token rotates
            token = f.read().strip()
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                secret = json.load(response)
            return base64.b64decode(secret["data"]["apiKey"]).decode().strip(), None
        except urllib.error.HTTPError as exc:
            return None, f"GET {url}: HTTP {exc.code}"
        except (OSError, KeyError, ValueError) as exc:
            return None, f"GET {url}: {exc}"

    log(f"waiting for the key Secret in {namespace}")
    return retry("the test tenant's API key", attempt)


def serving_url():
    name = os.environ["SERVING_SERVICE"]
    link = name.upper().replace("-", "_")
    host, port = os.environ.get(f"{link}_SERVICE_HOST"), os.environ.get(f"{link}_SERVICE_PORT")
    if host and port:
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"
    return f"http://{name}.{os.environ['SERVING_NAMESPACE']}.svc:{os.environ['SERVING_PORT']}"


def speak(base, key, text):
    body = json.dumps({"model": "chorus", "input": text, "voice": "default", "response_format": "wav"}).encode()

    def attempt():
        request = urllib.request.Request(f"{base}/v1/audio/speech", data=body, method="POST", headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.read(), None
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode(errors="replace")
            if exc.code in (401, 429, 502, 503, 504):  # key not yet in the serving tier's records; not ready
                return None, f"HTTP {exc.code}: {detail}"
            sys.exit(f"[helm-test] FAILED: POST {base}/v1/audio/speech: HTTP {exc.code}: {detail}")
        except OSError as exc:
            return None, f"POST {base}/v1/audio/speech: {exc}"

    return retry("synthesis through the Service", attempt)


def main():
    base = serving_url()
    key = api_key()
    text = os.environ.get("TEXT", "Hello from the Chorus helm test.")
    started = time.monotonic()
    audio = speak(base, key, text)
    if audio[:4] != b"RIFF" or audio[8:12] != b"WAVE" or len(audio) <= 44 + 2205:
        sys.exit(f"[helm-test] FAILED: not a WAV with audio in it: {len(audio)} bytes starting {audio[:12]!r}")
    log(f"OK: {len(audio)} bytes of WAV for {text!r} from {base} in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
