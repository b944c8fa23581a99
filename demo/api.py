# The "api" service (Python): reads requests, one a line, from stdin; asks the
# store for each over a UNIX socket; pipes the answers through a filter
# process; sends the filter's output over TCP to the collector.
#   python3 api.py SOCKET COLLECTOR_ADDR PORT FILTER [ARGS...]
import ctypes, socket, subprocess, sys, time

ctypes.CDLL(None).prctl(15, b"api", 0, 0, 0)  # PR_SET_NAME: its name in the trace


def retry(make):
    # The services start at the same time as this one: wait for them (up to 10 s).
    for _ in range(500):
        try:
            return make()
        except OSError:
            time.sleep(0.02)
    sys.exit(f"api: could not reach {make.__doc__}")


def readline(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def store_conn():
    """the store"""
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sock_path)
    except OSError:
        s.close()
        raise
    return s


def collector_conn():
    """the collector"""
    return socket.create_connection((addr, int(port)))


sock_path, addr, port, *filter_cmd = sys.argv[1:]
requests = sys.stdin.buffer.read().splitlines(keepends=True)
store = retry(store_conn)
filt = subprocess.Popen(filter_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
for req in requests:
    store.sendall(req)
    filt.stdin.write(readline(store))
    filt.stdin.flush()
store.close()
filt.stdin.close()
report = filt.stdout.read()
if filt.wait() != 0:
    sys.exit("api: the filter failed")
collector = retry(collector_conn)
collector.sendall(report)
collector.shutdown(socket.SHUT_WR)
sys.stdout.write("api: " + readline(collector).decode())
