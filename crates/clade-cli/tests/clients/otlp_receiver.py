"""An OTLP trace receiver built on the OpenTelemetry project's own protobuf messages
(`opentelemetry-proto`, PyPI) and gRPC's `grpcio`: what it cannot decode fails here.

Usage:
  otlp_receiver.py serve DIR [--fail N]
      Listens for OTLP/HTTP (protobuf, POST /v1/traces) and OTLP/gRPC (TraceService/Export) on
      free loopback ports, prints {"http": port, "grpc": port} on one line, then appends every
      export it takes to DIR/received.jsonl as {"transport": "http"|"grpc", "headers": {...},
      "spans": [...]}, each span flattened: hex ids, attributes as plain values. The first N
      exports (over either transport) are refused as the specification's retryable failures
      (HTTP 503, gRPC UNAVAILABLE) and counted in DIR/refused.
  otlp_receiver.py check FILE
      Parses each line of FILE as OTLP/JSON with the protobuf JSON parser, unknown fields
      refused (after turning OTLP/JSON's hex ids into the base64 protobuf's mapping expects),
      and prints {"requests": n, "spans": [...]} flattened as above.
"""

import base64
import json
import os
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

LOCK = threading.Lock()


def plain(value):
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(v) for v in value.array_value.values]
    if kind is None:
        return None
    return getattr(value, kind)


def flatten(request):
    spans = []
    for rs in request.resource_spans:
        resource = {kv.key: plain(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for span in ss.spans:
                spans.append({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": span.kind,
                    "start": span.start_time_unix_nano,
                    "end": span.end_time_unix_nano,
                    "attributes": {kv.key: plain(kv.value) for kv in span.attributes},
                    "status": {"code": span.status.code, "message": span.status.message},
                    "links": [{
                        "trace_id": link.trace_id.hex(),
                        "span_id": link.span_id.hex(),
                        "attributes": {kv.key: plain(kv.value) for kv in link.attributes},
                    } for link in span.links],
                    "scope": ss.scope.name,
                    "resource": resource,
                })
    return spans


class Receiver:
    def __init__(self, folder, fail):
        self.folder = folder
        self.fail = fail

    def refuse(self):
        """Whether to refuse this export (the first `fail` are)."""
        with LOCK:
            if self.fail <= 0:
                return False
            self.fail -= 1
            path = os.path.join(self.folder, "refused")
            count = int(open(path).read()) if os.path.exists(path) else 0
            with open(path, "w") as f:
                f.write(str(count + 1))
            return True

    def take(self, transport, headers, request):
        line = json.dumps({"transport": transport, "headers": headers, "spans": flatten(request)})
        with LOCK, open(os.path.join(self.folder, "received.jsonl"), "a") as f:
            f.write(line + "\n")


def http_handler(receiver):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            if self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(415)
                self.end_headers()
                return
            if receiver.refuse():
                self.send_response(503)
                self.send_header("Retry-After", "1")
                self.end_headers()
                return
            request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
            receiver.take("http", {k.lower(): v for k, v in self.headers.items()}, request)
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    return Handler


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver):
        self.receiver = receiver

    def Export(self, request, context):
        if self.receiver.refuse():
            context.abort(grpc.StatusCode.UNAVAILABLE, "not now")
        headers = {k: v for k, v in context.invocation_metadata()}
        self.receiver.take("grpc", headers, request)
        return trace_service_pb2.ExportTraceServiceResponse()


def serve(folder, fail):
    receiver = Receiver(folder, fail)
    http = ThreadingHTTPServer(("127.0.0.1", 0), http_handler(receiver))
    threading.Thread(target=http.serve_forever, daemon=True).start()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(receiver), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(json.dumps({"http": http.server_address[1], "grpc": grpc_port}), flush=True)
    # Until the test closes our standard input (or kills us).
    sys.stdin.read()
    server.stop(0)
    http.shutdown()


def to_base64(node):
    """OTLP/JSON writes ids in hex; the protobuf JSON mapping expects base64."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                out[key] = base64.b64encode(bytes.fromhex(value)).decode()
            else:
                out[key] = to_base64(value)
        return out
    if isinstance(node, list):
        return [to_base64(v) for v in node]
    return node


def check(path):
    spans, requests = [], 0
    for line in open(path):
        if not line.strip():
            continue
        request = trace_service_pb2.ExportTraceServiceRequest()
        json_format.ParseDict(to_base64(json.loads(line)), request, ignore_unknown_fields=False)
        requests += 1
        spans.extend(flatten(request))
    print(json.dumps({"requests": requests, "spans": spans}))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        fail = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--fail" else 0
        serve(sys.argv[2], fail)
    else:
        check(sys.argv[2])
