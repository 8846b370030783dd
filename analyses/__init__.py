"""The scripts behind ``make figures``: one per paper result (see ``python -m analyses --help``)."""
