#!/usr/bin/env python3
"""Validate vs the bare health Check by h2load, with every side's CPU time per call.

Usage: python3 tests/bench/h2load_cpu_per_call.py BINDIR [sigil-server flags...]
Env: ROUNDS (3), DUR (5 s), SHAPE ('-c4 -m32'), CALLS ('health,validate'),
     SPIN (server CPUs for taskset, '0'; '' = unpinned), CPIN (h2load's, '1'; '' = unpinned).

Starts BINDIR/sigil-server, logs in as admin, then runs h2load on each call in
turn, ROUNDS times, and prints per run: req/s, the server's user and system
CPU per call (/proc/PID/stat) and h2load's (rusage), and the median ratio."""
import os, subprocess, sys, re, statistics, resource
from sigil_wire import GRPC_HEADERS as grpc_headers, Server, field
bindir = sys.argv[1]
rounds = int(os.environ.get('ROUNDS', '3'))
dur = os.environ.get('DUR', '5')
spin = os.environ.get('SPIN', '0')  # server cpu list for taskset, '' = unpinned
cpin = os.environ.get('CPIN', '1')
shape = os.environ.get('SHAPE', '-c4 -m32').split()
calls = os.environ.get('CALLS', 'health,validate').split(',')
pre = ['taskset', '-c', spin] if spin else []
cpre = ['taskset', '-c', cpin] if cpin else []
sigil = Server(bindir, prefix=pre, flags=sys.argv[2:])
server, url, write = sigil.process, sigil.url, sigil.write
token = sigil.admin_token()
bodies = {
    'health': ('/grpc.health.v1.Health/Check', write('health', b'')),
    'validate': ('/sigil.v1.IdentityService/Validate', write('validate', field(1, token))),
}
def cpu(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return int(f[11]) / os.sysconf('SC_CLK_TCK'), int(f[12]) / os.sysconf('SC_CLK_TCK')
def run(name):
    path, body = bodies[name]
    c0 = cpu(server.pid)
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(cpre + ['h2load'] + shape + [f'-D{dur}', '-d', body] + grpc_headers + [url + path],
        capture_output=True, text=True, timeout=600)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c1 = cpu(server.pid)
    m = re.search(r'finished in [^,]+, ([\d.]+) req/s', r.stdout)
    n = int(re.search(r'(\d+) 2xx', r.stdout).group(1))
    rate = float(m.group(1))
    hc = (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime)
    return rate, ((c1[0] - c0[0]) / n * 1e6, (c1[1] - c0[1]) / n * 1e6), hc / n * 1e6
# warm
for name in calls:
    path, body = bodies[name]
    subprocess.run(['h2load', '-n2000', '-c1', '-m8', '-d', body] + grpc_headers + [url + path], capture_output=True)
res = {c: [] for c in calls}
for k in range(rounds):
    for name in calls:
        rate, scpu, hcpu = run(name)
        res[name].append(rate)
        print(f'{name:9} {rate:9.0f} req/s  server user {scpu[0]:5.1f} sys {scpu[1]:5.1f} us/call  h2load {hcpu:5.1f} us/call  load {open("/proc/loadavg").read().split()[0]}', flush=True)
if 'health' in res and 'validate' in res:
    ratios = [v / h for v, h in zip(res['validate'], res['health'])]
    print('ratios', ' '.join(f'{x:.3f}' for x in ratios), 'median', f'{statistics.median(ratios):.3f}')
sigil.stop()
