"""SDTM's partition and merge functions as they were before the launch cuts (commit 9af45c8), frozen: the
reference the faster ones must equal within float tolerance (tests/test_launches.py). Test use only."""
