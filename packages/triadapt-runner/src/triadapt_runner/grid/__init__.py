"""Ablation grids: the grid file, its cells, selection of rows, and how cells are executed."""
