#!/usr/bin/env python3
"""Writes bans.json beside this script: 10,000 live bans (none on loopback) for full.yaml."""
import json, os, random, time

random.seed(3)
now = int(time.time())
bans, seen = [], set()
while len(bans) < 10_000:
    ip = "%d.%d.%d.%d" % (random.randint(11, 99), random.randint(0, 255), random.randint(0, 255), random.randint(1, 254))
    if ip in seen:
        continue
    seen.add(ip)
    bans.append({"net": ip + "/32", "since": now, "until": now + 86400, "forget_at": now + 172800,
                 "strikes": 1, "mode": "enforce", "source": "probers", "reason": "bench"})
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bans.json")
json.dump({"version": 1, "saved_at": now, "under_attack": None, "bans": bans}, open(out, "w"))
print(out)
