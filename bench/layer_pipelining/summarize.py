#!/usr/bin/env python3
"""Paired ratios of two kvs-prefill configurations from compare.sh's per-round kvs-loadgen JSON.

    bench/layer_pipelining/summarize.py OUT on off

Per codec: medians of TTFT, handoff and prefill for each configuration, and the median (with the
quartiles) over rounds of the paired ratio A/B, so that both sides of a ratio share a round's load.
"""
import collections
import glob
import json
import re
import statistics as st
import sys


def main(out, a, b):
    rounds = collections.defaultdict(dict)
    for f in glob.glob(out + "/r*_*.json"):
        m = re.match(r"r(\d+)_(.*)\.json", f.split("/")[-1])
        r, name = int(m.group(1)), m.group(2)
        for c in json.load(open(f))["codecs"]:
            if c["errors"] == 0:
                rounds[(c["codec"], r)][name] = c
    for codec in sorted({k[0] for k in rounds}):
        pairs = [v for (cd, _), v in rounds.items() if cd == codec and a in v and b in v]
        if len(pairs) < 2:
            print(f"{codec}: fewer than 2 paired rounds")
            continue

        def med(n, k):
            return st.median(p[n][k] for p in pairs)

        def ratio(k):
            rs = [p[a][k] / p[b][k] for p in pairs]
            q = st.quantiles(rs, n=4)
            return f"{st.median(rs):.3f} (IQR {q[0]:.3f}-{q[2]:.3f})"

        print(f"{codec:13s} rounds {len(pairs)}  {a}: TTFT {med(a, 'ttft_ms_p50'):.1f} ms, handoff "
              f"{med(a, 'handoff_ms_p50'):.3f} ms | {b}: TTFT {med(b, 'ttft_ms_p50'):.1f} ms, handoff "
              f"{med(b, 'handoff_ms_p50'):.3f} ms | {a}/{b}: TTFT {ratio('ttft_ms_p50')}, handoff "
              f"{ratio('handoff_ms_p50')}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
