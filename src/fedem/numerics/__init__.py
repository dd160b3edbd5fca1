"""Numerical kernels shared by the engine and the methods (no federation logic here)."""
