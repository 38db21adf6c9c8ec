"""Step 1 of compound scaling: the α/β/γ grid search, as an Optuna study several processes can share.

`grid` enumerates candidates (pure), `study` shares them among workers (Optuna, leases), `coefficients` trains
each φ=1 model with `effnet.train`, `report` turns the study into a table, a plot and an `effnet scale` command.
"""

from effnet.search.grid import Coefficients, GridError, coefficient_grid

__all__ = ["Coefficients", "GridError", "coefficient_grid"]
