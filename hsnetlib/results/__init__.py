"""The results: our runs beside the published numbers, as tables and figures.

* :mod:`~hsnetlib.results.paper`: the published numbers and each table's layout;
* :mod:`~hsnetlib.results.registries`: what the results read of hsnetlib's registries (variant options,
  benchmarks, backbones), each in one function;
* :mod:`~hsnetlib.results.collect`: run records into frames of evaluations, profiles and trainings;
* :mod:`~hsnetlib.results.tables`: the tables, one row per line and cell;
* :mod:`~hsnetlib.results.render`: markdown, CSV and the results folder's README;
* :mod:`~hsnetlib.results.figures`: the figures, each drawn once;
* :mod:`~hsnetlib.results.cli`: ``python -m hsnetlib.results --runs runs --out results``.

Imports run one way: paper, registries <- collect <- tables <- render, figures <- cli. The results
read the suite's run records; the suite never imports the results.
"""
from hsnetlib.results.cli import main, write_results
from hsnetlib.results.collect import read_records
from hsnetlib.results.paper import TABLES
from hsnetlib.results.tables import build_table

__all__ = ["TABLES", "build_table", "main", "read_records", "write_results"]
