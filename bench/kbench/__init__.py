"""Parts of ``bench/kernel_bench.py`` (one job per module); not shipped, imported with bench/ on sys.path."""
