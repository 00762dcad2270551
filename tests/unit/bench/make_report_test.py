#!/usr/bin/env python3
"""Unit test of bench/report/make_report.py on a tiny fixture (no measuring, no timing)."""

import importlib.util
import json
import os
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
spec = importlib.util.spec_from_file_location("make_report", os.path.join(ROOT, "bench", "report", "make_report.py"))
mr = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mr)


def point(rate, gbps, codec, mode, handoff, analytic_mode, wire, analytic_x, ratio, identity_ms):
    return {
        "rate": rate, "rate_nominal_gbps": gbps, "link_gbps": gbps, "model": "llama-3.1-8b", "input": "synthetic",
        "tokens": 1024, "geometry": {"layers": 32, "heads": 8, "tokens": 1024, "head_dim": 128},
        "codec": codec, "mode": mode,
        "handoff_ms": {"median": handoff, "min": handoff - 1, "max": handoff + 2, "q1": handoff - 0.5,
                       "q3": handoff + 1, "n": 3, "repeats": [handoff - 1, handoff, handoff + 2]},
        "analytic": {"link_gbps": gbps, "transfer_ms": analytic_x, "raw_ms": analytic_x * ratio,
                     "sequential_ms": analytic_mode, "pipelined_ms": analytic_mode, "mode_ms": analytic_mode},
        "deviation": {"handoff_vs_mode": (handoff - analytic_mode) / analytic_mode,
                      "handoff_vs_transfer_only": (handoff - analytic_x) / analytic_x,
                      "wire_vs_transfer": (wire - analytic_x) / analytic_x},
        "identity_handoff_ms": identity_ms, "speedup_vs_identity": identity_ms / handoff,
        "run": {"ratio": ratio, "encode_ms": 30.0, "wire_ms": wire, "decode_ms": 20.0, "handoff_ms": handoff,
                "verified": True},
    }


SWEEP = {
    "tool": "kvs-bench sweep", "command": "sweep --grid quick", "started_utc": "t0", "finished_utc": "t1",
    "elapsed_s": 120, "method": "fixture",
    "machine": {"cpu_model": "Fixture CPU", "cores": 2, "kernel": "Linux x", "loadavg_start": "0.5",
                "loadavg_end": "0.6"},
    "grid": {"name": "quick", "transport": "tcp", "warmup": 1, "repeats": 3},
    "links": {"4gbit": {"measured_gbps": 4.0}, "16gbit": {"measured_gbps": 16.0}},
    "cpu": {"16gbit": {"wall_s": 30.0, "machine_busy_cores": 1.9, "sweep_cores": 0.6, "other_processes_cores": 1.3,
                       "cores": 2}},
    "points": [
        point("4gbit", 4.0, "identity", "pipelined", 200.0, 190.0, 199.0, 190.0, 1.0, 200.0),
        point("4gbit", 4.0, "uniform_int8", "pipelined", 100.0, 80.0, 96.0, 95.0, 2.0, 200.0),
        point("16gbit", 16.0, "identity", "pipelined", 50.0, 48.0, 49.0, 47.5, 1.0, 50.0),
        point("16gbit", 16.0, "uniform_int8", "pipelined", 110.0, 100.0, 30.0, 24.0, 2.0, 50.0),
    ],
    "break_even": [{"model": "llama-3.1-8b", "tokens": 1024, "codec": "uniform_int8", "mode": "pipelined",
                    "ratio": 2.0, "kind": "bracketed", "lo_gbps": 4.0, "hi_gbps": 16.0, "lo_rate": "4gbit",
                    "hi_rate": "16gbit", "estimate_gbps": 8.0, "monotone": True}],
}
CODECS = {"benchmark": "codecs", "model": "llama-3.1-8b", "input": "fixture", "threads": 2,
          "geometry": {"layers": 32, "heads": 8, "tokens": 1024, "head_dim": 128},
          "memcpy_gbps_1t": 5.0, "memcpy_gbps_mt": 8.0,
          "codecs": [{"codec": "identity", "ratio": 1.0, "encode_gbps_1t": 9.0, "decode_gbps_1t": 9.0,
                      "encode_gbps_mt": 9.0, "decode_gbps_mt": 9.0},
                     {"codec": "uniform_int8", "ratio": 2.0, "encode_gbps_1t": 4.0, "decode_gbps_1t": 4.0,
                      "encode_gbps_mt": 7.0, "decode_gbps_mt": 7.5}]}
QUALITY = {"model": {"config": "FixtureLM"}, "protocol": {"prompts": 3},
           "codecs": [{"codec": "identity", "ratio": {"mean": 1.0}, "key_cosine": {"mean": 1.0},
                       "value_cosine": {"mean": 1.0}, "token_agreement": {"mean": 1.0, "ci95": [1.0, 1.0]},
                       "delta_ppl": {"mean": 0.0, "ci95": [0.0, 0.0]}},
                      {"codec": "uniform_int8", "ratio": {"mean": 2.0}, "key_cosine": {"mean": 0.99984},
                       "value_cosine": {"mean": 0.99986}, "token_agreement": {"mean": 0.976, "ci95": [0.963, 0.987]},
                       "delta_ppl": {"mean": 0.08, "ci95": [-0.067, 0.26]}}]}
GPU = {"benchmark": "codecs", "device": "cuda", "gpu": {"name": "FixtureGPU"},
       "results": [{"model": "llama-3.1-8b", "codec": "uniform_int8", "ratio": 2.0, "encode_gbps": 100.0,
                    "decode_gbps": 200.0},
                   {"model": "llama-3.1-70b", "codec": "uniform_int8", "skipped": "too big"}]}


def has_matplotlib():
    return importlib.util.find_spec("matplotlib") is not None


class MakeReportTest(unittest.TestCase):
    def build(self, gpu=None, plots=False):
        d = tempfile.mkdtemp(prefix="kvs_report_test_")
        path, written = mr.build_report([SWEEP], QUALITY, CODECS, gpu, d, with_plots=plots)
        with open(path) as f:
            return d, f.read(), written

    def test_analytic_break_even_formulas(self):
        self.assertAlmostEqual(mr.analytic_break_even_sequential(2.0, 4.0, 4.0), 8.0)
        self.assertAlmostEqual(mr.analytic_break_even_pipelined(2.0, 4.0, 6.0), 32.0)
        self.assertIsNone(mr.analytic_break_even_sequential(1.0, 4.0, 4.0))
        self.assertIsNone(mr.analytic_break_even_pipelined(2.0, 0.0, 4.0))

    def test_table4_measured_and_analytic_break_even(self):
        _, md, _ = self.build()
        row = next(l for l in md.splitlines() if l.startswith("| uniform_int8 |") and "B*" not in l
                   and "**8.0**" in l)
        self.assertIn("between 4gbit = 4.00 and 16gbit = 16.00", row)
        self.assertIn("| 8.0 / 32.0 |", row)  # from the CPU codec GB/s: sequential eq. (1) / pipelined
        self.assertIn("| no GPU run |", row)
        # The paper's A100 / T4 from CODECS.md §7.4 at nominal r = 2: 8·0.5/(1/57.1 + 1/114.6) = 152.
        self.assertIn("| 152 / 28 |", row)

    def test_table4_from_gpu_kernel_times_when_present(self):
        _, md, _ = self.build(gpu=GPU)
        row = next(l for l in md.splitlines() if l.startswith("| uniform_int8 |") and "**8.0**" in l)
        # r = 2, enc 100, dec 200 GB/s: 8·0.5/(0.01 + 0.005) = 266.7 sequential, 8·100 = 800 pipelined.
        self.assertIn("| 267 / 800 |", row)
        t3 = next(l for l in md.splitlines() if l.startswith("| uniform_int8 | 2.000 | 4.00 |"))
        self.assertIn("| 100.0 / 200.0 |", t3)

    def test_every_point_has_measured_beside_analytic_with_deviation(self):
        _, md, _ = self.build()
        every = md[md.index("## Every point"):]
        rows = [l for l in every.splitlines() if l.startswith("| llama-3.1-8b S=1024 |")]
        self.assertEqual(len(rows), 4)
        int8_16 = next(r for r in rows if "16gbit" in r and "uniform_int8" in r)
        self.assertIn("110.0 [109.0–112.0]", int8_16)  # median [min–max]
        self.assertIn("| 0.45 |", int8_16)  # identity 50 / 110
        self.assertIn("| 24.0 | +25.0% |", int8_16)  # analytic transfer, wire 30 vs 24
        self.assertIn("| 100.0 | +10.0% |", int8_16)  # analytic handoff, 110 vs 100
        int8_4 = next(r for r in rows if "4gbit" in r and "uniform_int8" in r)
        self.assertIn("| 2.00 |", int8_4)

    def test_deviation_summary_per_rate(self):
        _, md, _ = self.build()
        row = next(l for l in md.splitlines() if l.startswith("| llama-3.1-8b S=1024 | 16gbit (16.00) | pipelined | 2 |"))
        # handoff deviations at 16gbit: identity 50/48 − 1 = +4.2 %, int8 +10 %; median of two = +7.1 %.
        self.assertIn("| +7.1% | +4.2% … +10.0% |", row)

    def test_table1_quality_and_wire_ratio(self):
        _, md, _ = self.build()
        row = next(l for l in md.splitlines() if l.startswith("| uniform_int8 | 2.000 | – | 2.000 |"))
        self.assertIn("0.976 [0.963, 0.987]", row)
        self.assertIn("+0.080 [-0.067, +0.260]", row)

    def test_stage_limits_name_the_slowest_stage(self):
        _, md, _ = self.build()
        row = next(l for l in md.splitlines() if l.startswith("| llama-3.1-8b S=1024 | 16gbit (16.00) | 30.0 |"))
        self.assertIn("| encode |", row)  # encode 30 = wire 30 > decode 20: the first of the maxima
        row4 = next(l for l in md.splitlines() if l.startswith("| llama-3.1-8b S=1024 | 4gbit (4.00) | 30.0 |"))
        self.assertIn("| wire |", row4)

    def test_cpu_share_per_rate(self):
        _, md, _ = self.build()
        row = next(l for l in md.splitlines() if "| 16gbit | 16.00 |" in l)
        self.assertIn("| 30 | 1.90 / 2 | 0.60 | 1.30 |", row)

    def test_plots_written_as_png_and_svg(self):
        d, md, written = self.build(plots=True)
        if not has_matplotlib():
            self.assertIn("Plots skipped", md)
            return
        self.assertEqual(set(written), {"handoff_vs_bandwidth", "speedup_vs_bandwidth", "quality_vs_ratio",
                                        "measured_vs_analytic"})
        for name in written:
            for ext in ("png", "svg"):
                self.assertGreater(os.path.getsize(os.path.join(d, f"{name}.{ext}")), 1000)
            self.assertIn(f"({name}.svg)", md)

    def test_cli_rejects_a_missing_file(self):
        d = tempfile.mkdtemp(prefix="kvs_report_test_")
        self.assertEqual(mr.main(["--sweep", os.path.join(d, "nope.json"), "--out", d]), 2)
        fixture = os.path.join(d, "sweep.json")
        with open(fixture, "w") as f:
            json.dump(SWEEP, f)
        self.assertEqual(mr.main(["--sweep", fixture, "--out", d, "--no-plots"]), 0)
        self.assertTrue(os.path.exists(os.path.join(d, "README.md")))


if __name__ == "__main__":
    unittest.main()
