"""The benchmark behind `jobs/benchmark.py`: an application that measures the package, kept out of it (not
installed, not imported by any run). `sections.py`: end_to_end, tokenize, throughput, scaling; `gpu.py`: gpu."""
