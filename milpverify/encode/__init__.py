"""Solver-neutral encoding of verification problems as mixed-integer linear programs."""
