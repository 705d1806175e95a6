# The density workload of `kiln bench --density`, marking itself mergeable (and, with
# NORAND=1, without ASLR) before it re-executes itself; see ksm-aslr.sh.
import ctypes, os, sys
if os.environ.get("STAGE") != "2":
    libc = ctypes.CDLL(None)
    libc.prctl(67, 1, 0, 0, 0)
    if os.environ.get("NORAND") == "1":
        r = libc.personality(0x0040000)
        if r < 0: print("personality failed", ctypes.get_errno(), file=sys.stderr)
    os.environ["STAGE"] = "2"
    os.execv(sys.executable, [sys.executable] + sys.argv)
import json, decimal, email.parser, http.client, xml.etree.ElementTree, asyncio, unittest, argparse, csv, sqlite3
data = [str(i) * 10 for i in range(200000)]
table = {i: ('kiln', i, float(i)) for i in range(100000)}
import time
time.sleep(100)

