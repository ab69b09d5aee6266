"`tsbn --help` answers at once: timed as a ratio against a bare interpreter start, in the same run."
import statistics, subprocess, sys, time
from pathlib import Path

TSBN = Path(sys.executable).with_name('tsbn')

def _median_time(cmd, n=5):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); subprocess.run(cmd, check=True, capture_output=True); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

def test_help_is_fast_relative_to_python_start():
    # interleave the two so that load on the machine hits both alike
    base, helps = [], []
    for _ in range(3):
        base.append(_median_time([sys.executable, '-c', 'pass'], 3))
        helps.append(_median_time([str(TSBN), '--help'], 3))
    ratio = statistics.median(helps) / statistics.median(base)
    # measured: 0.26 s vs 0.023 s (ratio 11) on an idle 2-core machine; torch alone would add ~4 s (ratio > 150)
    assert ratio < 40, f"tsbn --help took {ratio:.0f}x a bare python start"

def test_help_of_every_command_imports_no_torch():
    code = ("import sys; from tsbn_nb.cli import main\n"
            "for c in ([], ['run'], ['reproduce'], ['predict'], ['data', 'manifest']):\n"
            "    try: main(c + ['--help'])\n"
            "    except SystemExit: pass\n"
            "print('torch' in sys.modules, 'pandas' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert r.stderr.strip().splitlines()[-1] == 'False False'
