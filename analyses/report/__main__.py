"""``python -m analyses.report``: the report alone, from the results already written."""

from analyses.__main__ import run_one
from analyses.report import main

run_one(main)
