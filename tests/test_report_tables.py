import json
import math

import numpy as np

from batchscale.report.tables import render, render_table, to_jsonable


def test_json_unwraps_numpy_and_nonfinite():
    rows = [{"a": np.float64(1.5), "b": np.int64(3), "c": math.inf, "d": np.arange(2)}]
    assert json.loads(render(rows, "json")) == [{"a": 1.5, "b": 3, "c": None, "d": [0, 1]}]


def test_table_aligns_and_formats():
    text = render_table([{"m": 1, "steps": 1234.5678}, {"m": 1024, "steps": None}])
    lines = text.splitlines()
    assert lines[0].split() == ["m", "steps"]
    assert lines[2].split() == ["1", "1235"]
    assert lines[3].split() == ["1024", "-"]
    assert len({len(line) for line in lines[:2]}) == 1


def test_csv_header_and_empty():
    text = render([{"x": 1, "y": None}, {"x": 2, "z": "k"}], "csv")
    assert text.splitlines() == ["x,y,z", "1,,", "2,,k"]
    assert to_jsonable((1, 2)) == [1, 2]


def test_csv_writes_integral_floats_as_integers_and_booleans_as_json_does():
    text = render([{"steps": 716.0, "lr": 0.5, "edge": False, "ok": True, "big": 1e20}], "csv")
    assert text.splitlines()[1] == "716,0.5,false,true,1e+20"


def test_a_table_column_never_mixes_plain_and_scientific_notation():
    text = render_table([{"b": 123.4, "lr": 0.25}, {"b": 2.5e-5, "lr": 0.125}])
    b_cells = [line.split()[0] for line in text.splitlines()[2:]]
    assert b_cells == ["1.234e+02", "2.500e-05"]
    lr_cells = [line.split()[1] for line in text.splitlines()[2:]]
    assert lr_cells == ["0.25", "0.125"]  # a column that needs no exponent keeps plain numbers
