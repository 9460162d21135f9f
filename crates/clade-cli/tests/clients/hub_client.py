"""Drives Clade's AgentHub over gRPC with gRPC's official Python packages (PyPI), unchanged:
`grpcio-tools` (its bundled protoc) makes the client from proto/, and `grpcio` calls Spawn,
SendMessage and Trace with tenant tokens, over plain HTTP/2 and over TLS.

Usage: hub_client.py plain PROTO_DIR ADDRESS TOKEN RIVAL_TOKEN READ_TOKEN
       hub_client.py tls PROTO_DIR ADDRESS TOKEN CA_CERT
       hub_client.py revoked PROTO_DIR ADDRESS TOKEN AGENT MARKER
         (a trace until its token is revoked; MARKER is written once an event arrived)
       hub_client.py crowded PROTO_DIR ADDRESS TOKEN AGENT
         (a second trace while one is open, then another once that one is cancelled)
Prints one JSON object with what each call returned; the Rust test asserts on it.
"""

import json
import os
import queue
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

mode, proto_dir, address, token = sys.argv[1:5]

# The client made from the committed .proto by grpcio-tools' own protoc.
generated = tempfile.mkdtemp()
code = protoc.main(
    [
        "protoc",
        f"-I{proto_dir}",
        f"--python_out={generated}",
        f"--grpc_python_out={generated}",
        "clade/hub/v1/hub.proto",
    ]
)
if code != 0:
    raise SystemExit(f"protoc refused proto/clade/hub/v1/hub.proto ({code})")
sys.path.insert(0, generated)
for package in ["clade", "clade/hub", "clade/hub/v1"]:
    open(os.path.join(generated, package, "__init__.py"), "a").close()
from clade.hub.v1 import hub_pb2 as pb  # noqa: E402
from clade.hub.v1 import hub_pb2_grpc as rpc  # noqa: E402

out = {}


def auth(with_token):
    return [("authorization", f"Bearer {with_token}")]


def error_of(call):
    """The status a failing call ends with: its code, message, Clade's error code and when to
    retry; None when it succeeds."""
    try:
        call()
    except grpc.RpcError as err:
        trailers = dict(err.trailing_metadata() or ())
        return {
            "status": err.code().name,
            "message": err.details(),
            "code": trailers.get("clade-error-code"),
            "retry_after": trailers.get("retry-after"),
        }
    return None


hub = None


def follow(request, with_token, until, seconds=30):
    """A trace's events until `until` holds for what arrived (or `seconds` pass); the
    stream is then cancelled, as a client that has seen enough does."""
    events = []
    stream = hub.Trace(request, metadata=auth(with_token), timeout=seconds)
    try:
        for event in stream:
            events.append(
                {
                    "id": event.id,
                    "session": event.session_id,
                    "kind": event.kind,
                    "data": json.loads(event.data_json),
                }
            )
            if until(events):
                break
    except grpc.RpcError as err:
        events.append({"error": err.code().name})
    stream.cancel()
    return events


def replied(text):
    return lambda events: any(
        e.get("kind") == "turn.finished" and text in (e["data"].get("reply") or "") for e in events
    )


def finished(count):
    return lambda events: sum(e.get("kind") == "turn.finished" for e in events) >= count


def plain():
    rival_token, read_token = sys.argv[5:7]
    # Spawn an agent with a task: the reply names the agent and the task's message.
    spawned = hub.Spawn(
        pb.SpawnRequest(agent=pb.SpawnAgent(handle="scout", name="Scout", task="first task")),
        metadata=auth(token),
    )
    out["spawned"] = {
        "agent_id": spawned.agent.agent_id,
        "handle": spawned.agent.handle,
        "template": spawned.agent.template,
        "task_event": spawned.agent.task.event_id,
        "task_session": spawned.agent.task.session_id,
    }

    # A live trace started before the message: it sees the message's turn, and its text as it
    # is written.
    live = queue.Queue()
    tracing = threading.Thread(
        target=lambda: live.put(
            follow(pb.TraceRequest(agent="scout", deltas=True), token, replied("hello over grpc"))
        )
    )
    tracing.start()
    time.sleep(1.0)

    # SendMessage: acknowledged once stored; the same key again is the same message.
    message = pb.SendMessageRequest(
        agent="scout",
        source=pb.Source(platform="grpc", channel="c1", actor="me"),
        text="hello over grpc",
        idempotency_key="grpc-key-1",
    )
    first = hub.SendMessage(message, metadata=auth(token)).accepted
    again = hub.SendMessage(message, metadata=auth(token)).accepted
    out["sent"] = {"event_id": first.event_id, "session": first.session_id, "duplicate": first.duplicate}
    out["again"] = {"event_id": again.event_id, "session": again.session_id, "duplicate": again.duplicate}
    tracing.join(40)
    out["live"] = live.get(timeout=1) if not live.empty() else None

    # The whole trace from the start: both turns (the task's and the message's), once each.
    out["replay"] = follow(pb.TraceRequest(agent="scout", after=0), token, finished(2))
    # Resumed after its first event: the rest, nothing before.
    if out["replay"]:
        first_id = out["replay"][0]["id"]
        out["resumed_after"] = first_id
        out["resumed"] = follow(pb.TraceRequest(agent="scout", after=first_id), token, finished(2))
    # Only one session's, only some kinds.
    out["filtered"] = follow(
        pb.TraceRequest(
            agent="scout", session_id=first.session_id, after=0, kinds=["turn.finished"]
        ),
        token,
        finished(1),
    )

    # Spawn a worker run on the message's session; the same key finds the same run.
    run = pb.SpawnRequest(
        run=pb.SpawnRun(
            session_id=first.session_id,
            kind=pb.RUN_KIND_WORKER,
            task="count to three",
            idempotency_key="run-1",
        )
    )
    started = hub.Spawn(run, metadata=auth(token)).run
    repeated = hub.Spawn(run, metadata=auth(token)).run
    out["run"] = {
        "execution_id": started.execution_id,
        "session_id": started.session_id,
        "kind": started.kind,
        "duplicate": started.duplicate,
    }
    out["run_again"] = {"execution_id": repeated.execution_id, "duplicate": repeated.duplicate}

    # Refusals, each with its status and Clade's code.
    errors = {}
    errors["no_token"] = error_of(lambda: hub.SendMessage(message))
    errors["bad_token"] = error_of(lambda: hub.SendMessage(message, metadata=auth("nope")))
    errors["read_only_spawn"] = error_of(
        lambda: hub.Spawn(pb.SpawnRequest(agent=pb.SpawnAgent(handle="x")), metadata=auth(read_token))
    )
    errors["read_only_send"] = error_of(lambda: hub.SendMessage(message, metadata=auth(read_token)))
    errors["rival_send"] = error_of(
        lambda: hub.SendMessage(
            pb.SendMessageRequest(
                agent="scout", source=pb.Source(platform="grpc", channel="c", actor="a"), text="hi"
            ),
            metadata=auth(rival_token),
        )
    )
    errors["rival_into_session"] = error_of(
        lambda: hub.SendMessage(
            pb.SendMessageRequest(session_id=first.session_id, text="hi"), metadata=auth(rival_token)
        )
    )
    errors["rival_trace"] = error_of(
        lambda: list(hub.Trace(pb.TraceRequest(agent="scout", after=0), metadata=auth(rival_token)))
    )
    errors["rival_run"] = error_of(lambda: hub.Spawn(run, metadata=auth(rival_token)))
    errors["taken_handle"] = error_of(
        lambda: hub.Spawn(pb.SpawnRequest(agent=pb.SpawnAgent(handle="scout")), metadata=auth(token))
    )
    errors["bad_handle"] = error_of(
        lambda: hub.Spawn(
            pb.SpawnRequest(agent=pb.SpawnAgent(handle="Not A Handle")), metadata=auth(token)
        )
    )
    errors["nothing_to_spawn"] = error_of(lambda: hub.Spawn(pb.SpawnRequest(), metadata=auth(token)))
    errors["blank_task"] = error_of(
        lambda: hub.Spawn(
            pb.SpawnRequest(agent=pb.SpawnAgent(handle="blank", task="   ")), metadata=auth(token)
        )
    )
    errors["no_kind"] = error_of(
        lambda: hub.Spawn(
            pb.SpawnRequest(run=pb.SpawnRun(session_id=first.session_id, task="t")),
            metadata=auth(token),
        )
    )
    errors["empty_text"] = error_of(
        lambda: hub.SendMessage(pb.SendMessageRequest(agent="scout", text=""), metadata=auth(token))
    )
    errors["unknown_kind"] = error_of(
        lambda: list(hub.Trace(pb.TraceRequest(agent="scout", kinds=["nope"]), metadata=auth(token)))
    )
    errors["unknown_agent"] = error_of(
        lambda: list(hub.Trace(pb.TraceRequest(agent="ghost"), metadata=auth(token)))
    )
    errors["not_a_session"] = error_of(
        lambda: hub.SendMessage(
            pb.SendMessageRequest(session_id="not-a-uuid", text="hi"), metadata=auth(token)
        )
    )
    out["errors"] = errors
    out["blank_made_no_agent"] = error_of(
        lambda: list(hub.Trace(pb.TraceRequest(agent="blank"), metadata=auth(token)))
    )


def over_tls():
    global hub
    ca_cert = sys.argv[5]
    with open(ca_cert, "rb") as file:
        credentials = grpc.ssl_channel_credentials(root_certificates=file.read())
    hub = rpc.AgentHubStub(grpc.secure_channel(address, credentials))
    spawned = hub.Spawn(
        pb.SpawnRequest(agent=pb.SpawnAgent(handle="sealed", task="over tls")),
        metadata=auth(token),
        timeout=20,
    ).agent
    out["spawned"] = {"handle": spawned.handle, "task_session": spawned.task.session_id}
    out["trace"] = follow(pb.TraceRequest(agent="sealed", after=0), token, finished(1))
    plain = rpc.AgentHubStub(grpc.insecure_channel(address))
    out["plain_to_tls"] = error_of(
        lambda: plain.Spawn(pb.SpawnRequest(), metadata=auth(token), timeout=5)
    )


def until_revoked():
    """A live trace held open while the test revokes its token: how it ends."""
    agent, marker = sys.argv[5:7]
    stream = hub.Trace(pb.TraceRequest(agent=agent), metadata=auth(token), timeout=60)
    out["events"] = 0
    try:
        for _ in stream:
            out["events"] += 1
            if out["events"] == 1:
                open(marker, "w").close()
        out["ended"] = {"status": "OK"}
    except grpc.RpcError as err:
        trailers = dict(err.trailing_metadata() or ())
        out["ended"] = {
            "status": err.code().name,
            "message": err.details(),
            "code": trailers.get("clade-error-code"),
        }


def crowded():
    """Traces past the token's stream quota: refused while one is open, taken once it closed.
    A trace that was taken and shows nothing ends at its deadline (DEADLINE_EXCEEDED)."""
    agent = sys.argv[5]

    def status_of(seconds):
        call = hub.Trace(pb.TraceRequest(agent=agent), metadata=auth(token), timeout=seconds)
        return error_of(lambda: next(call)) or {"status": "OK"}

    first = hub.Trace(pb.TraceRequest(agent=agent), metadata=auth(token), timeout=60)
    # The server takes the first trace's slot as the call arrives; give it that long.
    time.sleep(1)
    out["second"] = status_of(5)
    first.cancel()
    # The slot comes back when the server sees the cancel: ask again for a while.
    for _ in range(20):
        out["after_close"] = status_of(1)["status"]
        if out["after_close"] == "DEADLINE_EXCEEDED":
            break
        time.sleep(0.2)


if mode == "tls":
    over_tls()
elif mode == "revoked":
    hub = rpc.AgentHubStub(grpc.insecure_channel(address))
    until_revoked()
elif mode == "crowded":
    hub = rpc.AgentHubStub(grpc.insecure_channel(address))
    crowded()
else:
    hub = rpc.AgentHubStub(grpc.insecure_channel(address))
    plain()

print(json.dumps(out))
