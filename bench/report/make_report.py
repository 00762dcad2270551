#!/usr/bin/env python3
"""kvshuttle benchmark report: the KVShuttle paper's tables and plots from measured runs.

Reads
  --sweep FILE     `kvs-bench sweep --json` (repeatable; points are concatenated)
  --quality FILE   `kvs-bench quality --json` (or the same schema, e.g. deploy/quality/*.json)
  --codecs FILE    `kvs-bench codecs --json` (CPU codec throughput)
  --gpu FILE       optional `kvs-bench codecs --device cuda --json` (GPU kernel times)
and writes into --out DIR:
  README.md                          every table (Table 1, 3, 4, the sweep with measured vs analytic)
  handoff_vs_bandwidth.{png,svg}     pipelined handoff time vs measured link rate, per codec
  speedup_vs_bandwidth.{png,svg}     speed-up over raw identity vs link rate, per codec
  quality_vs_ratio.{png,svg}         token agreement vs compression ratio (front)
  measured_vs_analytic.{png,svg}     measured handoff / wire time vs the analytic model
Plots need matplotlib (Debian: python3-matplotlib); without it the tables are still written.

Usage: bench/report/make_report.py --sweep sweep.json --quality q.json --codecs codecs.json --out DIR
"""

import argparse
import json
import math
import os
import statistics
import sys

# CODECS.md §7.4: the paper's GPU kernel throughput (GB/s of uncompressed fp16 bytes, "corrected" =
# bytes the timed call really processed; median over its model × length grid).
PAPER_GPU = {
    # codec: (A100 compress, A100 decompress, T4 compress, T4 decompress)
    "uniform_int8": (57.1, 114.6, 10.7, 21.3),
    "kivi_2bit": (49.8, 86.8, 9.4, 17.2),
    "uniform_int4": (43.1, 64.0, 7.8, 13.0),
    "fp8_e4m3": (93.5, 109.1, 9.0, 15.9),
    "cachegen": (13.4, 33.3, 4.3, 7.1),
    "cascade_prune50_int4": (57.4, 88.8, 11.3, 19.4),
    "palu_lr": (0.1, 176.1, 0.1, 34.2),
}
# The paper's nominal compression ratios used for its GPU break-even (CODECS.md §5.4).
PAPER_NOMINAL_RATIO = {"uniform_int8": 2.0, "fp8_e4m3": 2.0, "uniform_int4": 4.0, "kivi_2bit": 7.0,
                       "cachegen": 3.8, "cascade_prune50_int4": 8.0, "palu_lr": 4.0}

PAPER_CODEC_ORDER = ["identity", "lossless_zstd", "lossless_lz4", "fp8_e4m3", "uniform_int8", "uniform_int4",
                     "kivi_2bit", "kvquant_2bit", "cachegen", "palu_lr", "topk_prune_50", "cascade_prune50_int4",
                     "palu_int4", "mixed_k8v4"]


# ---- arithmetic (tested by tests/unit/bench/make_report_test.py) -----------------------------------

def analytic_break_even_sequential(ratio, enc_gbps, dec_gbps):
    """Paper eq. (CODECS.md §5.5 (1)): B* = 8·(1 − 1/r)/(1/enc + 1/dec) Gbit/s; None when it cannot pay."""
    if not ratio or ratio <= 1 or not enc_gbps or not dec_gbps or enc_gbps <= 0 or dec_gbps <= 0:
        return None
    return 8.0 * (1.0 - 1.0 / ratio) / (1.0 / enc_gbps + 1.0 / dec_gbps)


def analytic_break_even_pipelined(ratio, enc_gbps, dec_gbps):
    """Stages overlapped, the slowest sets the pace: B* = 8·min(enc, dec) Gbit/s (r > 1)."""
    if not ratio or ratio <= 1 or not enc_gbps or not dec_gbps or enc_gbps <= 0 or dec_gbps <= 0:
        return None
    return 8.0 * min(enc_gbps, dec_gbps)


def order_codecs(names):
    known = [c for c in PAPER_CODEC_ORDER if c in names]
    return known + sorted(c for c in names if c not in PAPER_CODEC_ORDER)


def fmt(v, spec=".2f", none="–"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return format(v, spec)


def pct(v):
    return fmt(None if v is None else 100.0 * v, "+.1f") + ("%" if v is not None else "")


def md_table(header, rows, align=None):
    align = align or ["---"] * len(header)
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def input_label(p):
    if p.get("input") == "real":
        return f"{p['model']} (real KV, S={p['tokens']})"
    return f"{p['model']} S={p['tokens']}"


def rate_order(p):
    """The rate axis: shaped rates by their tbf rate, then unshaped veth, then loopback (the sweep's order)."""
    return p.get("rate_order") or p.get("link_gbps", 0)


def rate_label(p):
    return f"{p['rate']} ({p['link_gbps']:.2f})"


def describe_break_even(b):
    k = b.get("kind")
    if k == "bracketed":
        return (f"**{b['estimate_gbps']:.1f}** (between {b['lo_rate']} = {b['lo_gbps']:.2f} and "
                f"{b['hi_rate']} = {b['hi_gbps']:.2f})" + ("" if b.get("monotone", True) else ", non-monotone"))
    if k == "above_all":
        return (f"**> {b['lo_gbps']:.2f}** (faster on the top link, {b['lo_rate']}" +
                (")" if b.get("monotone", True) else "; not faster at every rate below it: non-monotone)"))
    if k == "below_all":
        return f"**< {b['hi_gbps']:.2f}** (slower already at {b['hi_rate']})"
    return "no data"


# ---- loading -----------------------------------------------------------------------------------------

def load(path):
    if not path:
        return None
    with open(path) as f:
        return json.load(f)


def merge_sweeps(docs):
    points, break_even, meta = [], [], []
    for d in docs:
        points += d.get("points", [])
        break_even += d.get("break_even", [])
        meta.append(d)
    return points, break_even, meta


# ---- tables --------------------------------------------------------------------------------------------

def table_machine(meta):
    lines = []
    for d in meta:
        m = d.get("machine", {})
        g = d.get("grid", {})
        lines.append(f"- **{g.get('name', '?')} grid**, {d.get('started_utc', '?')} → {d.get('finished_utc', '?')} "
                     f"({fmt(d.get('elapsed_s', 0) / 60, '.1f')} min): {m.get('cpu_model', '?')}, "
                     f"{m.get('cores', '?')} cores, {m.get('kernel', '?')}; load average at start "
                     f"`{m.get('loadavg_start', '?')}`, at end `{m.get('loadavg_end', '?')}`; transport "
                     f"{g.get('transport', '?')}, {g.get('warmup', '?')} warm-up + {g.get('repeats', '?')} timed "
                     f"transfers per point.")
        links = d.get("links", {})
        if links:
            order = g.get("rates", [])
            ranked = sorted(links.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
            lines.append("  Links measured (iperf3, one TCP stream): " + ", ".join(
                f"{k} → {v['measured_gbps']:.2f} Gbit/s" for k, v in ranked) + ".")
        lines.append(f"  Command: `{d.get('command', '?')}`")
    return "\n".join(lines) + "\n"


def table_cpu(meta):
    """Per sweep and rate: cores busy on the machine, by the sweep (with its receivers) and by everything else."""
    rows = []
    for d in meta:
        links = d.get("links", {})
        order = d.get("grid", {}).get("rates", [])
        for rate, c in sorted(d.get("cpu", {}).items(),
                              key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
            rows.append([d.get("grid", {}).get("name", "?") + (" (" + ",".join(d["grid"].get("codecs", [])) + ")"
                                                              if len(d.get("grid", {}).get("codecs", [])) <= 2 else ""),
                         rate, fmt(links.get(rate, {}).get("measured_gbps")), fmt(c["wall_s"], ".0f"),
                         f"{c['machine_busy_cores']:.2f} / {c['cores']:.0f}", fmt(c["sweep_cores"]),
                         fmt(c["other_processes_cores"])])
    if not rows:
        return ""
    return md_table(["sweep", "rate", "iperf3 Gbit/s", "wall s", "cores busy (machine)", "cores: this sweep",
                     "cores: other processes"], rows, ["---", "---", "---:", "---:", "---:", "---:", "---:"])


def wire_ratio_by_codec(points):
    """Median measured wire ratio (raw / bytes on the wire, frames included) per codec and input kind."""
    out = {}
    for p in points:
        out.setdefault((p["codec"], p.get("input", "synthetic")), []).append(p["run"]["ratio"])
    return {k: statistics.median(v) for k, v in out.items()}


def table1(quality, points):
    if not quality:
        return "_No quality JSON given._\n"
    wr = wire_ratio_by_codec(points)
    rows = []
    by = {c["codec"]: c for c in quality.get("codecs", [])}
    for name in order_codecs(list(by)):
        c = by[name]
        if "error" in c and "ratio" not in c:
            rows.append([name, "unavailable: " + c["error"]] + [""] * 6)
            continue

        def mean(key):
            v = c.get(key)
            return v.get("mean") if isinstance(v, dict) else v

        def ci(key, spec):
            v = c.get(key)
            if not isinstance(v, dict) or v.get("mean") is None:
                return "–"
            s = format(v["mean"], spec)
            if "ci95" in v:
                s += f" [{format(v['ci95'][0], spec)}, {format(v['ci95'][1], spec)}]"
            return s

        rows.append([name, fmt(mean("ratio"), ".3f"), fmt(wr.get((name, "real")), ".3f"),
                     fmt(wr.get((name, "synthetic")), ".3f"), fmt(mean("key_cosine"), ".5f"),
                     fmt(mean("value_cosine"), ".5f"), ci("token_agreement", ".3f"), ci("delta_ppl", "+.3f")])
    model = quality.get("model", {})
    name = model.get("config") or model.get("path") or "?"
    src = quality.get("note") or quality.get("command") or ""
    head = (f"Quality on {name}, {quality.get('protocol', {}).get('prompts', '?')} prompts "
            "(`kvs-bench quality`, teacher-forced TA and Δppl, mean [95% bootstrap CI]). "
            "Wire ratio = raw K+V bytes / bytes that crossed the link (frame headers included), median over the "
            "sweep's points.\n\n")
    if src:
        head += f"Source: {src}\n\n"
    return head + md_table(["codec", "ratio (quality)", "wire ratio, real SmolLM2 KV", "wire ratio, synthetic",
                            "key cos", "value cos", "TA [95% CI]", "Δppl [95% CI]"], rows,
                           ["---", "---:", "---:", "---:", "---:", "---:", "---", "---"])


def gpu_speeds(gpu):
    """codec -> (median encode GB/s, median decode GB/s, median ratio) over the GPU run's rows."""
    if not gpu:
        return {}
    acc = {}
    for r in gpu.get("results", []):
        if "encode_gbps" not in r:
            continue
        acc.setdefault(r["codec"], []).append(r)
    return {c: (statistics.median(x["encode_gbps"] for x in v), statistics.median(x["decode_gbps"] for x in v),
                statistics.median(x.get("ratio", 0) for x in v)) for c, v in acc.items()}


def table3(codecs, gpu):
    if not codecs:
        return "_No codecs JSON given._\n"
    gs = gpu_speeds(gpu)
    gpu_name = (gpu or {}).get("gpu", {}).get("name", "GPU") if gpu else None
    rows = []
    for c in sorted(codecs["codecs"], key=lambda c: order_codecs([x["codec"] for x in codecs["codecs"]]).index(c["codec"])):
        name = c["codec"]
        pg = PAPER_GPU.get(name)
        ours_gpu = gs.get(name)
        rows.append([name, fmt(c["ratio"], ".3f"), fmt(c["encode_gbps_1t"]), fmt(c["decode_gbps_1t"]),
                     fmt(c["encode_gbps_mt"]), fmt(c["decode_gbps_mt"]),
                     f"{fmt(ours_gpu[0], '.1f')} / {fmt(ours_gpu[1], '.1f')}" if ours_gpu else "no GPU run",
                     f"{pg[0]} / {pg[1]}" if pg else "–", f"{pg[2]} / {pg[3]}" if pg else "–"])
    g = codecs.get("geometry", {})
    head = (f"GB/s = 10⁹ bytes of uncompressed fp16 K+V per second (encode / decode). CPU: `kvs-bench codecs` on "
            f"{codecs.get('model', '?')} [{g.get('layers')}, {g.get('heads')}, {g.get('tokens')}, {g.get('head_dim')}], "
            f"{codecs.get('input', '')}; 1t = one thread, mt = {codecs.get('threads', '?')} threads; memcpy "
            f"{fmt(codecs.get('memcpy_gbps_1t'))} GB/s (1t), {fmt(codecs.get('memcpy_gbps_mt'))} GB/s (mt). "
            f"Paper GPU: CODECS.md §7.4 (eager PyTorch, fp32 inputs, 'corrected' throughput, median over its grid). "
            f"The paper's CPU (NumPy) per-codec timings are not tabulated in CODECS.md §7 (its CPU pipeline stages "
            f"are single unwarmed runs, §8 item 17), so there is no CPU-paper column.\n\n")
    return head + md_table(["codec", "ratio", "CPU enc 1t", "CPU dec 1t", "CPU enc mt", "CPU dec mt",
                            f"ours {gpu_name or 'GPU'} enc / dec", "paper A100 enc / dec", "paper T4 enc / dec"],
                           rows, ["---"] + ["---:"] * 8)


def table4(break_even, codecs, gpu, points):
    cpu = {c["codec"]: c for c in (codecs or {}).get("codecs", [])}
    gs = gpu_speeds(gpu)
    measured = {}
    for b in break_even:
        if b.get("mode") != "pipelined":
            continue
        measured.setdefault(b["codec"], []).append(b)
    names = order_codecs(set(measured) | {c for c in cpu if c != "identity"})
    rows = []
    for name in names:
        if name == "identity":
            continue
        ms = measured.get(name, [])
        meas = "<br>".join(f"{b['model']} S={b['tokens']}: {describe_break_even(b)}" for b in ms) or "not swept"
        c = cpu.get(name)
        cpu_seq = cpu_pipe = None
        if c:
            cpu_seq = analytic_break_even_sequential(c["ratio"], c["encode_gbps_1t"], c["decode_gbps_1t"])
            cpu_pipe = analytic_break_even_pipelined(c["ratio"], c["encode_gbps_1t"], c["decode_gbps_1t"])
        g = gs.get(name)
        if g:
            gpu_col = (f"{fmt(analytic_break_even_sequential(g[2], g[0], g[1]), '.0f')} / "
                       f"{fmt(analytic_break_even_pipelined(g[2], g[0], g[1]), '.0f')}")
        else:
            gpu_col = "no GPU run"
        pg = PAPER_GPU.get(name)
        pr = PAPER_NOMINAL_RATIO.get(name)
        paper_col = (f"{fmt(analytic_break_even_sequential(pr, pg[0], pg[1]), '.0f')} / "
                     f"{fmt(analytic_break_even_sequential(pr, pg[2], pg[3]), '.0f')}") if pg and pr else "–"
        rows.append([name, meas, f"{fmt(cpu_seq, '.1f')} / {fmt(cpu_pipe, '.1f')}", gpu_col, paper_col])
    head = ("**Break-even bandwidth B\\*** = the link rate above which sending the codec's payload is no longer "
            "faster than sending raw identity (pipelined handoff, both measured on the same link in the same run). "
            "Measured: bracketed between the highest measured rate where the codec is faster and the next "
            "measured rate (estimate: speed-up interpolated linearly in log rate); `>` = faster at every rate "
            "measured, so B\\* lies above the top (unshaped) link. Analytic columns: paper eq. (1) "
            "B\\* = 8(1−1/r)/(1/enc+1/dec) (sequential) / pipelined B\\* = 8·min(enc, dec), Gbit/s, from measured "
            "codec throughput (CPU: one thread, Table 3). The paper's CPU break-even is ≤ 1 Gbit/s "
            "(CODECS.md §5.5).\n\n")
    return head + md_table(["codec", "measured B* (Gbit/s), pipelined, CPU codecs, 2 cores",
                            "analytic from CPU codec GB/s: seq / pipe", "analytic from our GPU kernels: seq / pipe",
                            "analytic from the paper's GPU kernels (§7.4, nominal r): A100 / T4 seq"],
                           rows, ["---", "---", "---:", "---:", "---:"])


def table_points(points):
    rows = []
    key = lambda p: (p["model"], p["tokens"], rate_order(p), order_codecs([p["codec"]] + PAPER_CODEC_ORDER).index(p["codec"]), p["mode"])
    for p in sorted(points, key=key):
        r, h, a, d = p["run"], p["handoff_ms"], p["analytic"], p["deviation"]
        rows.append([input_label(p), rate_label(p), p["codec"], p["mode"][:4], fmt(r["ratio"]),
                     fmt(r["encode_ms"], ".1f"), fmt(r["wire_ms"], ".1f"), fmt(r["decode_ms"], ".1f"),
                     f"{h['median']:.1f} [{h['min']:.1f}–{h['max']:.1f}]", f"{h['q1']:.1f}–{h['q3']:.1f}",
                     fmt(p.get("speedup_vs_identity")), fmt(a["transfer_ms"], ".1f"), pct(d.get("wire_vs_transfer")),
                     fmt(a["mode_ms"], ".1f"), pct(d.get("handoff_vs_mode")),
                     "yes" if r.get("verified", False) else ("–" if "verified" not in r else "NO")])
    head = ("Every point: link = measured iperf3 rate (Gbit/s); stage times are sums over chunks (ms, median repeat); "
            "handoff = median [min–max] and IQR over the timed repeats; × raw = identity's handoff / this handoff on "
            "the same link; analytic transfer = 8·wire bytes / link rate (the paper's formula) beside the measured "
            "wire time; analytic handoff = the mode's model (sequential: Σenc + transfer + Σdec; pipelined: "
            "(c₀+x₀+d₀) + (n−1)·max of the stage means) with deviation = (measured − analytic)/analytic.\n\n")
    return head + md_table(["input", "rate (link)", "codec", "mode", "ratio", "enc", "wire", "dec", "handoff ms",
                            "IQR", "× raw", "analytic transfer", "wire dev", "analytic handoff", "handoff dev", "ok"],
                           rows, ["---"] * 4 + ["---:"] * 11 + ["---"])


def deviation_summary(points):
    groups = {}
    for p in points:
        groups.setdefault((input_label(p), rate_order(p), p["rate"], p["mode"]), []).append(p)
    rows = []
    for (inp, _, rate, mode), ps in sorted(groups.items()):
        gbps = ps[0]["link_gbps"]
        hd = [p["deviation"]["handoff_vs_mode"] for p in ps if p["deviation"].get("handoff_vs_mode") is not None]
        wd = [p["deviation"]["wire_vs_transfer"] for p in ps if p["deviation"].get("wire_vs_transfer") is not None]
        rows.append([inp, f"{rate} ({gbps:.2f})", mode, len(ps),
                     pct(statistics.median(wd)) if wd else "–", f"{pct(min(wd))} … {pct(max(wd))}" if wd else "–",
                     pct(statistics.median(hd)) if hd else "–", f"{pct(min(hd))} … {pct(max(hd))}" if hd else "–"])
    return md_table(["input", "rate (link Gbit/s)", "mode", "codecs", "wire vs analytic transfer: median", "range",
                     "handoff vs analytic handoff: median", "range"], rows,
                    ["---", "---", "---", "---:", "---:", "---", "---:", "---"])


def stage_limits(points, codec="uniform_int8"):
    """Per rate, for `codec` pipelined: the stage sums and which one limits (the honest account of B*)."""
    rows = []
    for p in sorted(points, key=lambda p: (p["model"], p["tokens"], rate_order(p))):
        if p["codec"] != codec or p["mode"] != "pipelined":
            continue
        r = p["run"]
        stages = {"encode": r["encode_ms"], "wire": r["wire_ms"], "decode": r["decode_ms"]}
        slow = max(stages, key=stages.get)
        raw = p.get("identity_handoff_ms")
        rows.append([input_label(p), rate_label(p), fmt(r["encode_ms"], ".1f"), fmt(r["wire_ms"], ".1f"),
                     fmt(r["decode_ms"], ".1f"), slow, fmt(r["handoff_ms"], ".1f"),
                     fmt(r["handoff_ms"] / max(stages.values()) if max(stages.values()) > 0 else None),
                     fmt(raw, ".1f"), fmt(p.get("speedup_vs_identity"))])
    return md_table(["input", "rate (link)", "Σ encode ms", "wire ms", "Σ decode ms", "slowest stage",
                     "handoff ms", "handoff / slowest", "identity handoff ms", "× raw"], rows,
                    ["---", "---"] + ["---:"] * 3 + ["---"] + ["---:"] * 4)


# ---- plots ----------------------------------------------------------------------------------------------

def save(fig, out, name):
    for ext in ("png", "svg"):  # no dates in the files: regenerating unchanged data changes nothing
        fig.savefig(os.path.join(out, f"{name}.{ext}"), dpi=110, bbox_inches="tight",
                    metadata={"Date": None} if ext == "svg" else None)


def plots(points, quality, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcParams["svg.hashsalt"] = "kvshuttle"  # stable SVG ids
    matplotlib.rcParams["svg.fonttype"] = "none"
    written = []
    inputs = sorted({(p["model"], p["tokens"], p.get("input", "synthetic")) for p in points})
    pipe = [p for p in points if p["mode"] == "pipelined"]
    codecs = order_codecs({p["codec"] for p in points})
    palette = plt.get_cmap("tab20").colors
    colors = {c: palette[(PAPER_CODEC_ORDER.index(c) if c in PAPER_CODEC_ORDER else 14 + i) % len(palette)]
              for i, c in enumerate(codecs)}

    def grid(n):
        cols = min(n, 2)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.2 * rows), squeeze=False)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        return fig, axes.flat

    axis = sorted({(rate_order(p), p["rate"]) for p in points})
    xpos = {r: i for i, (_, r) in enumerate(axis)}

    def xticks(ps):
        links = {}
        for p in ps:
            links.setdefault(p["rate"], p["link_gbps"])
        return [f"{r}\n{links[r]:.2f}" if r in links else r for _, r in axis]

    if pipe:
        for name, ylabel, value in (
                ("handoff_vs_bandwidth", "handoff (ms, median; bars min–max)", lambda p: p["handoff_ms"]["median"]),
                ("speedup_vs_bandwidth", "speed-up over raw identity (measured)", lambda p: p.get("speedup_vs_identity"))):
            fig, axes = grid(len(inputs))
            for ax, (model, tokens, kind) in zip(axes, inputs):
                for codec in codecs:
                    ps = sorted((p for p in pipe if p["model"] == model and p["tokens"] == tokens
                                 and p["codec"] == codec and value(p) is not None), key=rate_order)
                    if not ps:
                        continue
                    x = [xpos[p["rate"]] for p in ps]
                    y = [value(p) for p in ps]
                    color = colors[codec]
                    if name == "handoff_vs_bandwidth":
                        err = [[p["handoff_ms"]["median"] - p["handoff_ms"]["min"] for p in ps],
                               [p["handoff_ms"]["max"] - p["handoff_ms"]["median"] for p in ps]]
                        ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=2, label=codec, color=color)
                    else:
                        ax.plot(x, y, marker="o", ms=4, label=codec, color=color)
                if name == "handoff_vs_bandwidth":
                    ps = sorted((p for p in pipe if p["model"] == model and p["tokens"] == tokens
                                 and p["codec"] == "identity"), key=rate_order)
                    if ps:
                        ax.plot([xpos[p["rate"]] for p in ps], [p["analytic"]["raw_ms"] for p in ps], "k--", lw=1,
                                label="raw, analytic (bytes/rate)")
                    ax.set_yscale("log")
                else:
                    ax.axhline(1.0, color="k", lw=1, ls="--")
                ax.set_xticks(range(len(axis)))
                ax.set_xticklabels(xticks([p for p in pipe if p["model"] == model and p["tokens"] == tokens]),
                                   fontsize=8)
                ax.set_xlabel("link (tbf rate, unshaped veth, loopback) / measured Gbit/s")
                ax.set_ylabel(ylabel)
                ax.set_title(f"{model} {'real KV' if kind == 'real' else 'S=' + str(tokens)}, pipelined", fontsize=10)
                ax.grid(True, which="both", alpha=0.3)
                ax.legend(fontsize=7)
            fig.tight_layout()
            save(fig, out, name)
            plt.close(fig)
            written.append(name)

        fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
        for ax, (mkey, akey, title) in zip(axes, (("wire", "transfer_ms", "wire time vs bytes/rate"),
                                                  ("handoff", "mode_ms", "handoff vs the mode's analytic model"))):
            for mode, marker in (("pipelined", "o"), ("sequential", "s")):
                ps = [p for p in points if p["mode"] == mode and p["analytic"][akey] > 0]
                m = [p["run"]["wire_ms"] if mkey == "wire" else p["handoff_ms"]["median"] for p in ps]
                a = [p["analytic"][akey] for p in ps]
                ax.scatter(a, m, marker=marker, s=16, alpha=0.7, label=mode)
            lim = [min([p["analytic"][akey] for p in points if p["analytic"][akey] > 0] or [1]) * 0.7,
                   max([p["handoff_ms"]["median"] for p in points] or [10]) * 1.4]
            ax.plot(lim, lim, "k--", lw=1, label="measured = analytic")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("analytic (ms)")
            ax.set_ylabel("measured (ms)")
            ax.set_title(title, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        save(fig, out, "measured_vs_analytic")
        plt.close(fig)
        written.append("measured_vs_analytic")

    if quality:
        fig, ax = plt.subplots(figsize=(7, 4.6))
        pts = []
        for c in quality.get("codecs", []):
            if "ratio" not in c or "token_agreement" not in c:
                continue
            r, ta = c["ratio"]["mean"], c["token_agreement"]["mean"]
            pts.append((r, ta, c["codec"]))
            lo, hi = c["token_agreement"].get("ci95", [ta, ta])
            ax.errorbar([r], [ta], yerr=[[ta - lo], [hi - ta]], fmt="o", ms=5, capsize=2)
        # Labels: codecs at nearly the same point (identity and the lossless ones; int8 and fp8) stack.
        placed = []
        for r, ta, name in sorted(pts, key=lambda t: (-t[1], t[0])):
            k = sum(1 for (r2, t2) in placed if abs(math.log(r / r2)) < 0.08 and abs(ta - t2) < 0.04)
            placed.append((r, ta))
            ax.annotate(name, (r, ta), fontsize=7, xytext=(5, 3 - 9 * k), textcoords="offset points")
        front, best = [], -1.0
        for r, ta, _ in sorted(pts, key=lambda t: -t[0]):
            if ta > best:
                front.append((r, ta))
                best = ta
        if front:
            front.sort()
            ax.step([f[0] for f in front], [f[1] for f in front], where="post", color="k", lw=1, ls="--",
                    label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("compression ratio")
        ax.set_ylabel("token agreement (teacher-forced, 95% CI)")
        ax.set_title("quality vs ratio (kvs-bench quality)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, out, "quality_vs_ratio")
        plt.close(fig)
        written.append("quality_vs_ratio")
    return written


# ---- main ----------------------------------------------------------------------------------------------

def build_report(sweeps, quality, codecs, gpu, out, with_plots=True):
    os.makedirs(out, exist_ok=True)
    points, break_even, meta = merge_sweeps(sweeps)
    written = []
    plot_note = ""
    if with_plots:
        try:
            written = plots(points, quality, out)
        except ImportError:
            plot_note = "_Plots skipped: matplotlib is not installed (Debian: python3-matplotlib)._\n\n"
    md = ["# kvshuttle: the KVShuttle paper's tables, measured\n",
          "Generated by `bench/report/make_report.py` (run by `scripts/bench-report`); every number below comes "
          "from the JSON files next to this one.\n"]
    if meta:
        md += ["## Machine and method\n", table_machine(meta), "\n" + meta[0].get("method", "") + "\n"]
    md += [plot_note]
    for name, title in (("handoff_vs_bandwidth", "Handoff time vs bandwidth"),
                        ("speedup_vs_bandwidth", "Speed-up over raw identity vs bandwidth"),
                        ("quality_vs_ratio", "Quality vs ratio"),
                        ("measured_vs_analytic", "Measured vs analytic")):
        if name in written:
            md.append(f"![{title}]({name}.svg)\n")
    md += ["## Table 1 — ratio and quality\n", table1(quality, points)]
    md += ["## Table 3 — codec speed\n", table3(codecs, gpu)]
    md += ["## Table 4 — break-even bandwidth\n", table4(break_even, codecs, gpu, points)]
    if points:
        md += ["### What limits it: uniform_int8, pipelined, stage by stage\n", stage_limits(points)]
        cpu = table_cpu(meta)
        if cpu:
            md += ["### What limits it: the CPU, who used it during each rate\n", cpu]
        md += ["## Measured vs analytic, summary\n", deviation_summary(points)]
        md += ["## Every point\n", table_points(points)]
    path = os.path.join(out, "README.md")
    with open(path, "w") as f:
        f.write("\n".join(md))
    return path, written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep", action="append", default=[], help="kvs-bench sweep JSON (repeatable)")
    ap.add_argument("--quality", help="kvs-bench quality JSON")
    ap.add_argument("--codecs", help="kvs-bench codecs JSON")
    ap.add_argument("--gpu", help="kvs-bench codecs --device cuda JSON (optional)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--no-plots", action="store_true", help="tables only")
    a = ap.parse_args(argv)
    try:
        sweeps = [load(s) for s in a.sweep]
        quality, codecs = load(a.quality), load(a.codecs)
        gpu = load(a.gpu) if a.gpu and os.path.exists(a.gpu) else None
    except (OSError, json.JSONDecodeError) as e:
        print(f"make_report: {e}", file=sys.stderr)
        return 2
    path, written = build_report(sweeps, quality, codecs, gpu, a.out, with_plots=not a.no_plots)
    print(f"make_report: wrote {path}" + (f" and {len(written)} plots (PNG + SVG)" if written else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
