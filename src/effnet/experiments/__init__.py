"""The paper's experiments, computed: tables of the family and of compound scaling (and, in later modules, the
ones that need training)."""
