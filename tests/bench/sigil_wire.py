"""What the hand-run bench scripts beside this file share: a throwaway
sigil-server on free loopback ports, gRPC request bodies encoded by hand
(protobuf length-delimited fields in a gRPC frame, so that h2load and
nghttp send them with no per-call encoding), and an admin's access token.

Import it from a script in this folder (python3 puts the script's folder on
sys.path)."""
import os, socket, subprocess, tempfile, time

ADMIN_PASSWORD = 'profile-admin-password'
GRPC_HEADERS = ['-H', 'content-type: application/grpc', '-H', 'te: trailers']


def free_port():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); return p


def varint(v):
    b = bytearray()
    while True:
        if v < 0x80: b.append(v); return bytes(b)
        b.append((v & 0x7f) | 0x80); v >>= 7


def field(tag, data):
    """A length-delimited protobuf field (strings, bytes, messages)."""
    if isinstance(data, str): data = data.encode()
    return varint(tag << 3 | 2) + varint(len(data)) + data


def frame(msg):
    """One uncompressed gRPC message: flag 0, its length, its bytes."""
    return b'\0' + len(msg).to_bytes(4, 'big') + msg


class Server:
    """sigil-server from BINDIR under `prefix` (taskset, valgrind...) on free
    ports, its data in `work` (a new temporary dir when None), with the admin
    password set; `url`, `pid`, `write(name, msg)` for request bodies,
    `admin_token()`. `settle` is the wait after it listens."""

    def __init__(self, bindir, prefix=(), flags=(), work=None, settle=0.5):
        self.work = work or tempfile.mkdtemp(prefix='sigil-bench-')
        self.port, http = free_port(), free_port()
        env = dict(os.environ, SIGIL_ADMIN_PASSWORD=ADMIN_PASSWORD, SIGIL_LOG='warn')
        self.process = subprocess.Popen(list(prefix) + [f'{bindir}/sigil-server', '--listen', f'127.0.0.1:{self.port}',
            '--http-listen', f'127.0.0.1:{http}', '--data-dir', os.path.join(self.work, 'data')] + list(flags),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.process.pid
        self.url = f'http://127.0.0.1:{self.port}'
        for _ in range(600):
            try: socket.create_connection(('127.0.0.1', self.port), timeout=1).close(); break
            except OSError: time.sleep(0.2)
        time.sleep(settle)

    def write(self, name, msg):
        """Writes `msg` as one gRPC frame to a file in the work dir; its path."""
        p = os.path.join(self.work, name); open(p, 'wb').write(frame(msg)); return p

    def admin_token(self):
        """Logs in as admin with nghttp; the access token (field 1 of the answer)."""
        login = self.write('login', field(1, 'admin') + field(2, ADMIN_PASSWORD))
        resp = subprocess.run(['nghttp', '-d', login] + GRPC_HEADERS + [self.url + '/sigil.v1.IdentityService/Authenticate'],
            capture_output=True, timeout=300).stdout
        assert resp[5] == 0x0a, resp[:40]
        i, shift, length = 6, 0, 0
        while True:
            b = resp[i]; length |= (b & 0x7f) << shift; i += 1; shift += 7
            if b < 0x80: break
        return resp[i:i+length].decode()

    def stop(self):
        self.process.terminate(); self.process.wait(timeout=60)
