#!/usr/bin/env python3
"""A fault injector for the real kube-apiserver: an HTTPS admission webhook
that fails (HTTP 500) the first --count admission requests for an object
named --name of kind --kind, and allows everything else.

With failurePolicy: Fail the apiserver turns each failed call into a 500
InternalError for the client, exactly as when a real webhook backend is
broken, so a test sees real server errors from the real apiserver.

Run: fault_webhook.py --cert C --key K --port-file F --kind ConfigMap --name a --count 2
"""
import argparse, json, threading
from standin_http import QuietHandler, QuietServer, publish_port, server_tls

ap = argparse.ArgumentParser()
for flag in ("--cert", "--key", "--port-file", "--kind", "--name"):
    ap.add_argument(flag, required=True)
ap.add_argument("--count", type=int, required=True)
args = ap.parse_args()
lock = threading.Lock()
left = [args.count]
PROBE = "fault-webhook-probe"
failing = set()


class Handler(QuietHandler):
    def do_POST(self):
        review = json.loads(self.read_body() or b"{}")
        req = review.get("request", {})
        name = req.get("name") or req.get("object", {}).get("metadata", {}).get("name")
        hit = req.get("kind", {}).get("kind") == args.kind and name == args.name
        uid = req.get("uid", "")
        with lock:
            # The apiserver retries a failed call with the same request uid:
            # one client request is failed once, however often it is retried.
            if hit and uid not in failing and left[0] > 0:
                failing.add(uid)
                left[0] -= 1
            # The probe the test sends to see that the apiserver calls us.
            fail = name == PROBE or uid in failing
        if fail:
            return self.reply(500)
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "response": {"uid": req.get("uid", ""), "allowed": True}}).encode()
        self.reply(200, body, {"Content-Type": "application/json"})


server = QuietServer(("127.0.0.1", 0), Handler)
server.label = "fault webhook"
server.socket = server_tls(args.cert, args.key).wrap_socket(server.socket, server_side=True)
publish_port(server, args.port_file)
server.serve_forever()
