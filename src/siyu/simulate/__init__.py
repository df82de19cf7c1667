"""The brand simulator: a seeded, deterministic private domain whose ground truth is known.

``simulate(brand, customers=…, months=…, seed=…, out=…)`` writes importable data files and the
truth beside them; :mod:`siyu.simulate.load` puts them into a ``SIYU_HOME``.
"""
