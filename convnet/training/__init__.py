"""Compiling, fitting and writing run folders."""
