"""Sends events over Clade's WebSocket (`GET /v1/ws`) with the `websockets` package (PyPI),
unchanged: event frames answered once stored, idempotency keys, a `wait` answered with the
reply, a subscription's events, a burst past the connection's in-flight cap, bad frames, and
other tenants' and read-only tokens refused per frame.

Usage: ws_client.py URL TOKEN RIVAL_TOKEN READ_TOKEN
Prints one JSON object with what each step got; the Rust test asserts on it.
"""

import json
import sys

from websockets.sync.client import connect

url, token, rival, reader = sys.argv[1:5]
SOURCE = {"platform": "http", "channel": "ws", "actor": "grace"}
got = {"events": [], "unnamed": []}


def open_socket(bearer):
    return connect(url, additional_headers={"Authorization": f"Bearer {bearer}"}, open_timeout=10)


def answers(socket, refs):
    """Reads frames until each of `refs` is answered; the answers by ref (events kept aside)."""
    found = {}
    while not set(refs) <= set(found):
        frame = json.loads(socket.recv(timeout=30))
        if frame["type"] in ("accepted", "error") and frame.get("ref") in refs:
            found[frame["ref"]] = frame
        elif frame["type"] == "event":
            got["events"].append(frame["kind"])
        elif frame["type"] == "error" and "ref" not in frame:
            got["unnamed"].append(frame)
        else:
            got.setdefault("other", []).append(frame)
    return found


def event(ref, body):
    return json.dumps({"type": "event", "ref": ref, "event": body})


with open_socket(token) as ws:
    first = {"agent": "ada", "text": "/reply one", "source": SOURCE, "idempotency_key": "k-1"}
    ws.send(event("a", first))
    ws.send(event("b", first))
    got["first"] = answers(ws, ["a", "b"])
    session = got["first"]["a"]["session_id"]

    ws.send(json.dumps({"type": "subscribe", "session": session}))
    ws.send(event("c", {"session": session, "text": "/reply two", "wait": True}))
    got["wait"] = answers(ws, ["c"])["c"]

    ws.send(event("d", {"text": "no source"}))
    ws.send(json.dumps({"type": "event", "ref": 7, "event": first}))
    ws.send(event("e", dict(first, bogus=1)))
    ws.send("{not json")
    got["bad"] = answers(ws, ["d", "e"])
    while len(got["unnamed"]) < 2:
        frame = json.loads(ws.recv(timeout=30))
        if frame["type"] == "error" and "ref" not in frame:
            got["unnamed"].append(frame)

    refs = [f"burst-{i}" for i in range(40)]
    for i, ref in enumerate(refs):
        ws.send(event(ref, {"agent": "ada", "text": f"/reply {i}", "source": SOURCE,
                            "idempotency_key": ref}))
    burst = answers(ws, refs)
    got["burst"] = sorted({frame["type"] for frame in burst.values()})
    got["burst_events"] = len({frame.get("event_id") for frame in burst.values()})

with open_socket(rival) as ws:
    ws.send(event("r", {"session": session, "text": "/reply stolen"}))
    got["rival"] = answers(ws, ["r"])["r"]

with open_socket(reader) as ws:
    ws.send(event("s", first))
    got["reader"] = answers(ws, ["s"])["s"]

print(json.dumps(got))
