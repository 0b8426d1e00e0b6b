"""bench/topk_ties.py: one row per ``split.tie_break``, agreeing on how many users tie (which items each
holds out: tests/ghrs/data/test_splits.py)."""

from tests.bench import load_bench
from tests.ghrs.data.test_splits import _tied_ml100k


def test_one_row_per_tie_break(tmp_path, capsys):
    folder, *_ = _tied_ml100k(tmp_path)
    load_bench("topk_ties").main(["--root", str(folder)])
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [r[0].strip() for r in rows] == ["hash", "item", "file"]
    assert len({r[1] for r in rows}) == 1 and int(rows[0][1].split(" of ")[0]) >= 10  # same tied users, many
    assert all(0.0 <= float(v) <= 1.0 for r in rows for v in r[4:])
