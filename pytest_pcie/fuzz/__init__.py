"""Differential testing: random topologies run on the reference model and on real libvirt.

Data flows one way: a hypothesis strategy draws an :class:`~pytest_pcie.fuzz.example.Example`
(``strategies``), both backends run it and their normalised outcomes are compared (``differ``), a
disagreement is cut down to a minimal example (``shrink``) and written as a ready-to-use case folder
(``writer``).  ``runner`` strings these together for the ``pcie-fuzz`` command (``cli``) and for the
bounded pass CI runs.
"""
