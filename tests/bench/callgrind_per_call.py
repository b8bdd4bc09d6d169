#!/usr/bin/env python3
"""Callgrind instructions per call of Sigil's unary calls.

Usage: python3 tests/bench/callgrind_per_call.py BINDIR [N] [health,validate,check]

Starts BINDIR/sigil-server under valgrind --tool=callgrind, logs in as admin,
then for each call: zero the counters, send N identical requests with
h2load (-c1 -m8), dump. Total Ir of the dump / N = instructions per call,
whole process (runtime, HTTP/2, gRPC, handler)."""
import os, subprocess, sys, tempfile, time, glob, re
from sigil_wire import GRPC_HEADERS as grpc_headers, Server, field

bindir, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20000
calls = sys.argv[3].split(',') if len(sys.argv) > 3 else ['health', 'validate', 'check']
work = tempfile.mkdtemp(prefix='sigil-prof-')
out = os.path.join(work, 'callgrind.out')
sigil = Server(bindir, prefix=['valgrind', '--tool=callgrind', f'--callgrind-out-file={out}', '--dump-instr=no'],
    work=work, settle=2)
server, url, write = sigil.process, sigil.url, sigil.write
token = sigil.admin_token()
headers = [(':authority', 'app.example'), (':method', 'GET'), (':path', '/'), (':scheme', 'http'), ('accept', '*/*'),
    ('user-agent', 'h2load nghttp2/1.52.0'), ('x-forwarded-proto', 'http'),
    ('x-request-id', '5b1f4c1e-8c52-4c1e-9d4a-2b2f3f0e6a71'), ('authorization', 'Bearer ' + token)]
http_req = field(1, '5b1f4c1e-8c52-4c1e-9d4a-2b2f3f0e6a71') + field(2, 'GET') + \
    b''.join(field(3, field(1, k) + field(2, v)) for k, v in headers) + field(4, '/') + field(5, 'app.example') + \
    field(6, 'http') + field(10, 'HTTP/2')
bodies = {
    'health': ('/grpc.health.v1.Health/Check', write('health', b'')),
    'validate': ('/sigil.v1.IdentityService/Validate', write('validate', field(1, token))),
    'check': ('/envoy.service.auth.v3.Authorization/Check', write('check', field(1, field(4, field(2, http_req))))),
}
def load(path, body, count):
    r = subprocess.run(['h2load', f'-n{count}', '-c1', '-m8', '-d', body] + grpc_headers + [url + path],
        capture_output=True, text=True, timeout=1200)
    m = re.search(r'status codes: (\d+) 2xx', r.stdout); assert m and int(m.group(1)) == count, r.stdout
def ctl(flag): subprocess.run(['callgrind_control', flag, str(server.pid)], capture_output=True, check=True)
for name in calls:
    path, body = bodies[name]
    load(path, body, 500)
for name in calls:
    path, body = bodies[name]
    ctl('-z'); load(path, body, n); ctl('-d')
    time.sleep(1)
    dumps = sorted(glob.glob(out + '.*'), key=os.path.getmtime)
    latest = dumps[-1]
    total = next(int(l.split()[1]) for l in open(latest) if l.startswith('summary:') or l.startswith('totals:'))
    keep = os.path.join(os.path.dirname(bindir.rstrip('/')), f'callgrind.{os.path.basename(bindir.rstrip("/"))}.{name}')
    os.replace(latest, keep)
    print(f'{name:9} {total / n:9.0f} Ir/call  ({total} Ir over {n} calls; dump {keep})', flush=True)
sigil.stop()
