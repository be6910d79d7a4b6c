"""What does the Open Inference Protocol layer of the service example cost?

Prints, side by side in one run, the MEDIAN time of, for the example's diabetes
model (``examples/service/train.py``) and batches of 1 and 100 rows:

- ``decide`` on the rows (dicts keyed by feature name), then ``Decision.to_dict``
  per row: what ``POST /predict`` does besides HTTP;
- the same through the protocol: ``oip.decode_rows`` on an inference request of
  one tensor per column, ``decide``, ``oip.encode_outputs`` (every output);
- the same with a single BYTES tensor of JSON rows;

and each as a ratio to the first. HTTP and JSON (de)serialisation by the web
framework are the same for both routes and are not measured. Calls are
interleaved round-robin; BLAS/OpenMP pools are limited to one thread.

Run::

    PYTHONPATH=src python benchmarks/bench_oip.py [--repeats 101]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _timing import interleaved_seconds
from threadpoolctl import threadpool_limits

import safepredict as sp

SERVICE = Path(__file__).resolve().parents[1] / "examples" / "service"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, SERVICE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=101)
    args = parser.parse_args()
    train, oip = _load("train"), _load("oip")
    predictor = sp.SafePredictor.load(train.main(Path(tempfile.mkdtemp())), log="off")
    X, _ = train.load_data()
    names = [str(c) for c in predictor.feature_names_in_]
    outputs = [o["name"] for o in oip.model_metadata(predictor)["outputs"]]
    print(f"{'measurement':<44}{'median':>12}  ratio")
    for n in (1, 100):
        rows = X.iloc[:n].to_dict(orient="records")
        columns = {
            "inputs": [
                {
                    "name": c,
                    "shape": [n],
                    "datatype": "BYTES" if c == "sex" else "FP64",
                    "data": [str(r[c]) if c == "sex" else float(r[c]) for r in rows],
                }
                for c in names
            ]
        }
        json_rows = {
            "inputs": [
                {
                    "name": "rows",
                    "shape": [n],
                    "datatype": "BYTES",
                    "data": [json.dumps(r) for r in rows],
                }
            ]
        }

        def via_protocol(body: dict[str, Any]) -> Callable[[], Any]:
            def run() -> Any:
                decided = predictor.decide(oip.decode_rows(body, predictor, 1000))
                return oip.encode_outputs(decided, predictor, outputs)

            return run

        fns = {
            f"{n:>3} rows: decide + to_dict (/predict)": lambda rows=rows: [
                d.to_dict() for d in predictor.decide(rows)
            ],
            f"{n:>3} rows: OIP, one tensor per column": via_protocol(columns),
            f"{n:>3} rows: OIP, BYTES tensor of JSON rows": via_protocol(json_rows),
        }
        with threadpool_limits(1):
            medians = {
                k: float(np.median(v)) for k, v in interleaved_seconds(fns, args.repeats).items()
            }
        base = next(iter(medians.values()))
        for name, sec in medians.items():
            print(f"{name:<44}{sec * 1e3:>9.3f} ms  {sec / base:.2f}")


if __name__ == "__main__":
    main()
