"""Training: the loop (trainer), one run and the seed comparison (experiment), several processes (distributed), α × T sweeps (sweep)."""
