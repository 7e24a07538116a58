"""pet.export.speed's printed forms: the export's speed line and the before/after engine table."""

from __future__ import annotations

from pet.export.speed import engine_table, speed_line


def test_speed_line_names_the_engine_each_batch_size_and_pet():
    metrics = {"ct2_int8_sent_per_s_b1": 120.0, "ct2_int8_sent_per_s_b64": 900.0, "pet_sent_per_s_b1": 30.0,
               "pet_sent_per_s_b64": 300.0, "ct2_int8_speedup_vs_pet_b1": 4.0, "ct2_int8_speedup_vs_pet_b64": 3.0}
    assert speed_line(metrics, "int8") == (
        "CTranslate2 int8: 120.0 sent/s at batch 1, 900.0 at batch 64 "
        "(pet eager: 30.0, 300.0; CTranslate2 is x4.00, x3.00 as fast)"
    )


def test_engine_table_rows_in_engine_order_with_share_of_ideal_and_sizes():
    m = {}
    for engine, (b, a) in {"ct2_int8": (100.0, 150.0), "pet": (10.0, 12.0), "ct2_float32": (50.0, 200.0)}.items():
        for bs in (64, 1):
            m[f"{engine}_sent_per_s_b{bs}_before"], m[f"{engine}_sent_per_s_b{bs}_after"] = b * bs, a * bs
            m[f"{engine}_speedup_b{bs}"] = a / b
    m.update(ct2_float32_mb_before=4.0, ct2_float32_mb_after=2.0, ct2_int8_mb_before=1.0, ct2_int8_mb_after=0.5)
    lines = engine_table(m, ideal=2.0)
    assert lines[0].split() == ["engine", "batch", "before", "after", "speedup", "of", "ideal"]
    rows = [line.split() for line in lines[2:8]]
    assert [(r[0], r[2]) for r in rows] == [
        ("pet", "1"), ("pet", "64"), ("CTranslate2", "1"), ("CTranslate2", "64"), ("CTranslate2", "1"),
        ("CTranslate2", "64")]
    assert [r[1] for r in rows[2:]] == ["float32", "float32", "int8", "int8"]
    assert rows[0][-2:] == ["x1.20", "0.60"]
    assert rows[2][-3:] == ["x4.00", "2.00", "!"]  # above ideal: marked
    assert lines[8] == "size on disk: CTranslate2 float32 4.00 -> 2.00 MB, CTranslate2 int8 1.00 -> 0.50 MB"
    assert "of ideal" not in engine_table(m)[0]
