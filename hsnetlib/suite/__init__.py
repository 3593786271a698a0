"""Batch runs of the notebook suite: grids of papermill runs, locally or on Slurm, and the notebooks' helpers.

Modules, in import order (each imports only those before it): ``paths`` (project root), ``jsonfile`` (atomic
JSON), ``state`` (a run folder: state file, lock, done), ``grid`` (grid files), ``records`` (run records),
``notebook`` / ``cache`` / ``study`` (what the notebooks call), ``execute`` (one run, and the executors'
hand-off), ``local`` / ``slurm`` (executors), ``status``, ``smoke``, ``runner`` (a grid), ``cli``
(``python -m hsnetlib.suite``). Importing the package loads only the light ones below.
"""
from hsnetlib.suite.execute import KERNEL_NAME, kernel_options
from hsnetlib.suite.grid import GridError
from hsnetlib.suite.paths import notebook_path, project_root, resolve
from hsnetlib.suite.state import METRICS_FILE

__all__ = ["GridError", "KERNEL_NAME", "METRICS_FILE", "kernel_options", "notebook_path", "project_root", "resolve"]
