"""Benchmarks of the product against the stack it replaces (run with `tools/bench`).

Benchmarks are not tests: they measure and print, and assert nothing about speed.
"""
