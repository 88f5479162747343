import json, time
from click.testing import CliRunner
from edge_detector.cli import cli

def test_probe(trained, synthetic, tmp_path):
    _, bundle = trained
    data, csv = synthetic
    lines = open(csv).read().splitlines()
    print(lines[:2])
    for n in (1000, 3000):
        p = tmp_path / ("r%d.csv" % n)
        p.write_text("\n".join(lines[:n + 1]) + "\n")
        t = time.time()
        r = CliRunner().invoke(cli, ["detect", str(bundle), str(p), "--alarms-only"])
        print(n, len(r.output.splitlines()), time.time() - t)
    print(r.output.splitlines()[:2])
