"""tools/benchmark_adaptis.py runs and counts forwards: the same instances both
ways, one forward per accepted instance sequentially, fewer batched."""
import json

from tests.projects.adaptis.conftest import TINY


def test_benchmark_assembly(tmp_path):
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools", "benchmark_adaptis.py")
    spec = importlib.util.spec_from_file_location("benchmark_adaptis", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "b.json"
    result = bench.main(["--instances", "1", "9", "--warmup", "0", "--iters", "1", "--input-size", "64", "64",
                         "--chunk-size", "8", "--output", str(out)] + TINY)
    one, nine = result["rows"]
    assert one["sequential"]["forwards"] == 1 and nine["sequential"]["forwards"] == 9
    assert nine["batched"]["forwards"] < 9 and nine["candidates"] == 27
    assert json.loads(out.read_text())["markdown"][2].startswith("| 1 | 3 |")
