#!/usr/bin/env python3
"""Cold-pull stalls for the compose smoke test, with the standard library only.

  stall_probe.py seed UPSTREAM REPO COUNT DIGESTS
      push COUNT fresh random 256 KiB blobs to UPSTREAM (http://host:port) under REPO and
      write their digests to DIGESTS, one per line.
  stall_probe.py probe NODE REPO DIGESTS OFFSET STOP PULLS
      pull the digests from line OFFSET's number on, one at a time, from NODE (a wharf node's
      http://host:port), checking each one's sha256, until the file STOP exists; write each
      pull's start time and duration to PULLS, and the next unused line number to OFFSET.
      Exit 1 when a pull fails.
  stall_probe.py stall PULLS EVENT LIMIT_SECONDS
      the stall an event at EVENT (seconds since the epoch) caused: the slowest pull started
      after it less the median pull before it. Exit 1 when it is LIMIT_SECONDS or more.
"""

import hashlib
import os
import statistics
import sys
import time
import urllib.request


def seed(upstream, repo, count, out):
    with open(out, "w") as digests:
        for _ in range(int(count)):
            data = os.urandom(256 * 1024)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            start = urllib.request.Request(f"{upstream}/v2/{repo}/blobs/uploads/", method="POST")
            with urllib.request.urlopen(start, timeout=30) as response:
                location = response.headers["Location"]
            if location.startswith("/"):
                location = upstream + location
            sep = "&" if "?" in location else "?"
            put = urllib.request.Request(
                f"{location}{sep}digest={digest}",
                data=data,
                method="PUT",
                headers={"Content-Type": "application/octet-stream"},
            )
            with urllib.request.urlopen(put, timeout=30):
                pass
            digests.write(digest + "\n")


def probe(node, repo, digests_file, offset_file, stop_file, pulls_file):
    with open(digests_file) as f:
        digests = [line.strip() for line in f if line.strip()]
    offset = int(open(offset_file).read()) if os.path.exists(offset_file) else 0
    failed = None
    with open(pulls_file, "w") as pulls:
        while not os.path.exists(stop_file) and offset < len(digests):
            digest = digests[offset]
            offset += 1
            started = time.time()
            try:
                with urllib.request.urlopen(f"{node}/v2/{repo}/blobs/{digest}", timeout=30) as r:
                    body = r.read()
                if "sha256:" + hashlib.sha256(body).hexdigest() != digest:
                    failed = f"{digest}: wrong bytes"
            except Exception as e:  # noqa: BLE001 - any failure fails the probe
                failed = f"{digest}: {e}"
            pulls.write(f"{started} {time.time() - started}\n")
            if failed:
                break
            time.sleep(0.02)
    with open(offset_file, "w") as f:
        f.write(str(offset))
    if failed:
        print(f"stall probe: {failed}", file=sys.stderr)
        sys.exit(1)


def stall(pulls_file, event, limit):
    event, limit = float(event), float(limit)
    rows = [tuple(map(float, line.split())) for line in open(pulls_file) if line.strip()]
    before = [d for (s, d) in rows if s + d <= event]
    after = [d for (s, d) in rows if s + d > event]
    if len(before) < 3 or not after:
        print(f"stall probe: too few pulls ({len(before)} before, {len(after)} across)")
        sys.exit(1)
    median = statistics.median(before)
    slowest = max(after)
    worst = slowest - median
    print(
        f"stall {worst * 1000:.0f} ms (median {median * 1000:.0f} ms before, slowest "
        f"{slowest * 1000:.0f} ms over {len(after)} pulls across)"
    )
    sys.exit(0 if worst < limit else 1)


if __name__ == "__main__":
    commands = {"seed": seed, "probe": probe, "stall": stall}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    commands[sys.argv[1]](*sys.argv[2:])
