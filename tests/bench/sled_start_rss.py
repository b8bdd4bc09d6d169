#!/usr/bin/env python3
"""Start to SERVING, RSS idle and the ListSessions page latency of one sigil-server over one
(seeded) sled data directory, then three restarts after SIGTERM and three after SIGKILL
(BENCHMARKS.md, #18 item 2). BIN_DIR holds sigil-server and sigil-bench side by side.
Start = exec to the "sigil-server listening" line (SERVING from that line on).

usage: sled_start_rss.py BIN_DIR DATA_DIR [--no-list]"""
import os, re, signal, subprocess, sys, time
bin_dir, data = sys.argv[1], sys.argv[2]
def start():
    t0 = time.monotonic()
    p = subprocess.Popen([f"{bin_dir}/sigil-server", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                          "--data-dir", data], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={**os.environ, "SIGIL_LOG": "info"})
    addr = None
    for line in p.stdout:
        if "sigil-server listening" in line:
            m = re.search(r"(127\.0\.0\.1:\d+)", line)
            addr = m.group(1)
            break
    took = time.monotonic() - t0
    import threading
    threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
    return p, addr, took
def rss(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"):
            return int(l.split()[1]) / 1024
def load(): return open("/proc/loadavg").read().split()[0]
p, addr, took = start()
print(f"first start: {took:.2f} s (load {load()})")
time.sleep(2)
print(f"RSS idle: {rss(p.pid):.0f} MiB")
if "--no-list" not in sys.argv:
    out = subprocess.run([f"{bin_dir}/sigil-bench", "--server", f"http://{addr}", "--only", "list-sessions",
                          "--connections", "1", "--streams", "1", "--seconds", "5"], capture_output=True, text=True)
    for l in out.stdout.splitlines():
        if "list" in l.lower(): print("  ", l.strip())
    print(f"RSS after list: {rss(p.pid):.0f} MiB (load {load()})")
for how in ["TERM", "TERM", "TERM", "KILL", "KILL", "KILL"]:
    p.send_signal(signal.SIGTERM if how == "TERM" else signal.SIGKILL)
    p.wait()
    p, addr, took = start()
    time.sleep(1)
    print(f"start after {how}: {took:.2f} s, RSS {rss(p.pid):.0f} MiB (load {load()})")
p.send_signal(signal.SIGTERM); p.wait()
