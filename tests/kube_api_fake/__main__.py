"""`python -m tests.kube_api_fake --listen 127.0.0.1:PORT`: serve the fake until SIGTERM.

For the lab's end-to-end runs, where the API server must live in a process of its own
(bound inside a network namespace). Prints the base URL once it serves, so a caller can
wait for that line; writes a kubeconfig when asked.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.kube_api_fake import KubeApiFake


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kube_api_fake",
                                     description="Serve the Kubernetes API fake over HTTP.")
    parser.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                        help="address to serve on (port 0: a free one; default %(default)s)")
    parser.add_argument("--kubeconfig", metavar="PATH", help="write a kubeconfig for it here")
    parser.add_argument("--token", help="require this bearer token on every request")
    parser.add_argument("--bookmark-interval", type=float, default=1.0, metavar="SECONDS",
                        help="seconds between watch bookmarks (default %(default)s)")
    parser.add_argument("--namespace", action="append", dest="namespaces", metavar="NAME",
                        help="a namespace that exists from the start (repeatable; default: "
                             "default and kube-system)")
    args = parser.parse_args(argv)
    host, sep, port_text = args.listen.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        parser.error(f"--listen: expected HOST:PORT, got {args.listen!r}")
    fake = KubeApiFake(namespaces=args.namespaces or ("default", "kube-system"),
                       token=args.token, bookmark_interval=args.bookmark_interval)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    url = fake.start(host, int(port_text))
    if args.kubeconfig:
        fake.kubeconfig(args.kubeconfig)
    print(url, flush=True)
    done.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
