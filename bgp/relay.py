"""ExaBGP's API process: a byte pipe between ExaBGP and the speaker's unix socket.

ExaBGP runs `python -S bgp/relay.py <socket>` (see ExaBGPSpeaker.api_argv). The relay
connects to the speaker's socket and copies bytes both ways: its stdin (ExaBGP's JSON
and acks) to the socket, the socket (commands) to its stdout. It never blocks on one
direction while the other has data: every fd is non-blocking and each direction has
its own buffer. It exits when either side closes; ExaBGP then respawns it (the
speaker accepts the new connection) or ExaBGP itself is gone.

The first line on the socket is the relay's own, `relay <ExaBGP's pid>`: the speaker
uses it to tell the relay of its current ExaBGP from a late one of a dead instance.

ExaBGP writes to us with blocking writes and stalls completely while we do not read,
so stdin is always drained; a direction stops reading only when its buffer is over
MAX_BUFFER (the other end is not reading, and back-pressure is then the right answer).

Startup time matters (ExaBGP waits for nothing, but a respawn leaves a gap): stdlib
only, and importable as a file so that neither site-packages nor the bgp package
__init__ is loaded.
"""

import os
import selectors
import socket
import sys
import time

RELAY_MARK = "relay"  # the hello: "relay <pid>"
CHUNK = 1 << 16
MAX_BUFFER = 16 << 20
CONNECT_TRIES = 20  # 20 x 0.1 s: the speaker may be between two listeners


def _connect(path: str) -> socket.socket:
    for attempt in range(CONNECT_TRIES):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if attempt == CONNECT_TRIES - 1:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def relay(path: str, fd_in: int = 0, fd_out: int = 1) -> int:
    sock = _connect(path)
    fd_sock = sock.fileno()
    for fd in (fd_in, fd_out, fd_sock):
        os.set_blocking(fd, False)
    # buffers: what came from stdin for the socket, what came from the socket for stdout
    pending = {fd_sock: bytearray(f"{RELAY_MARK} {os.getppid()}\n".encode()), fd_out: bytearray()}
    source = {fd_sock: fd_in, fd_out: fd_sock}  # writer fd -> the fd that fills it
    sel = selectors.DefaultSelector()
    interest: dict[int, int] = {}

    def want(fd: int, events: int) -> None:
        if interest.get(fd) == events:
            return
        if fd in interest:
            if events:
                sel.modify(fd, events)
            else:
                sel.unregister(fd)
        elif events:
            sel.register(fd, events)
        if events:
            interest[fd] = events
        else:
            interest.pop(fd, None)

    def update() -> None:
        events = {fd_in: 0, fd_sock: 0, fd_out: 0}
        for dst, src in source.items():
            if len(pending[dst]) < MAX_BUFFER:
                events[src] |= selectors.EVENT_READ
            if pending[dst]:
                events[dst] |= selectors.EVENT_WRITE
        for fd, ev in events.items():
            want(fd, ev)

    update()
    while True:
        for key, mask in sel.select():
            fd = key.fd
            if mask & selectors.EVENT_READ:
                try:
                    data = os.read(fd, CHUNK)
                except BlockingIOError:
                    data = None
                except OSError:
                    return 1
                if data == b"":
                    # one side closed: hand over what is already read, best effort, and go
                    dst = fd_sock if fd == fd_in else fd_out
                    _drain(dst, pending[dst])
                    return 0
                if data:
                    pending[fd_sock if fd == fd_in else fd_out] += data
            if mask & selectors.EVENT_WRITE:
                buf = pending[fd]
                try:
                    n = os.write(fd, buf)
                except BlockingIOError:
                    n = 0
                except OSError:
                    return 1
                del buf[:n]
        update()


def _drain(fd: int, buf: bytearray, timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while buf and time.monotonic() < deadline:
        try:
            del buf[: os.write(fd, buf)]
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            return


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: relay.py <unix socket path>\n")
        return 2
    try:
        return relay(argv[1])
    except OSError as exc:
        sys.stderr.write(f"relay: {argv[1]}: {exc}\n")
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
