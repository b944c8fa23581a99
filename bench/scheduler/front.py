"""The scheduler experiment's HTTP front: a pre-forked server, like gunicorn's sync workers.

    /usr/bin/python3 front.py --port P --pg-port Q --workers 20 --iterations 2500 \
        --series 16000 --ready FILE [--renice]

The parent binds one listening socket on 127.0.0.1, forks the workers, and
writes FILE (the workers' pids, one a line) once every worker has connected to
PostgreSQL. Each worker accept()s on the shared socket and serves one
connection at a time: it reads one request (up to the blank line), does
--iterations rounds of PBKDF2-HMAC-SHA256 (CPU work in the worker), runs
`SELECT sum(i % 7) FROM generate_series(1, --series) i` over its own persistent
psycopg2 connection (TCP, 127.0.0.1: CPU work in its PostgreSQL backend),
replies and closes. SIGTERM to the parent stops the workers and exits 0.

--renice is the in-app reference, not causeway: right after reading a request,
the worker sets its own nice value and its backend's from the request's
X-Priority header, with the scheduler actor's default mapping (priority p > 0:
round(19 - 39 * (p - 1) / 254); 0: the nice value the worker started with).
It needs root.
"""
import argparse
import hashlib
import os
import re
import signal
import socket
import sys

import psycopg2

PRIORITY = re.compile(rb"\r\nX-Priority: *(\d+)", re.IGNORECASE)


def serve(sock: socket.socket, args: argparse.Namespace, ready_w: int) -> None:
    """One worker: a PostgreSQL connection, then one connection at a time until SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    db = psycopg2.connect(host="127.0.0.1", port=args.pg_port, user="postgres", dbname="postgres")
    db.autocommit = True
    cur = db.cursor()
    query = "SELECT sum(i %% 7) FROM generate_series(1, %s) i"
    os.write(ready_w, b"r")
    os.close(ready_w)
    salt = os.urandom(16)
    backend = db.get_backend_pid()
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    nice = own_nice
    while True:
        conn, _ = sock.accept()
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            if not data:
                continue
            if args.renice:
                m = PRIORITY.search(data)
                p = int(m.group(1)) if m else 0
                # Python rounds halves to even, JavaScript up: the same for 1-255 but 128 (-0.5), 0 in both.
                want = int(round(19 - 39 * (p - 1) / 254)) if p > 0 else own_nice
                if want != nice:
                    os.setpriority(os.PRIO_PROCESS, 0, want)
                    os.setpriority(os.PRIO_PROCESS, backend, want)
                    nice = want
            digest = hashlib.pbkdf2_hmac("sha256", data[:64], salt, args.iterations)
            cur.execute(query, (args.series,))
            total = cur.fetchone()[0]
            body = b"%d %s\n" % (total, digest[:4].hex().encode())
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))
        except OSError:
            pass
        finally:
            conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pg-port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=2500)
    ap.add_argument("--series", type=int, default=16000)
    ap.add_argument("--ready", required=True)
    ap.add_argument("--renice", action="store_true")
    args = ap.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    ready_r, ready_w = os.pipe()
    pids = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            try:
                serve(sock, args, ready_w)
            except BaseException as err:  # noqa: BLE001 - a worker reports and dies
                print(f"front worker {os.getpid()}: {err!r}", file=sys.stderr, flush=True)
                os._exit(1)
            os._exit(0)
        pids.append(pid)
    os.close(ready_w)

    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in pids:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    got = 0
    while got < args.workers:
        b = os.read(ready_r, args.workers)
        if not b:
            break
        got += len(b)
    if got == args.workers:
        tmp = args.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(f"{p}\n" for p in pids))
        os.rename(tmp, args.ready)
    else:
        print(f"front: only {got} of {args.workers} workers connected to PostgreSQL", file=sys.stderr, flush=True)
        stop(0, None)
    status = 0
    for _ in pids:
        _, st = os.wait()
        if not stopping and st != 0:
            status = 1
            stop(0, None)
    sys.exit(status if got == args.workers else 1)


if __name__ == "__main__":
    main()
