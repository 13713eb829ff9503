"""Side-by-side benchmarks. Each prints and saves its results with the command that made them."""
