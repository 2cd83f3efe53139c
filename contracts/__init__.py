"""The contracts between the packages: the study bundle, the paradigm, the unit, errors and config loading.

Dependency rule (tests/test_import_graph.py holds it): ``contracts`` imports only pydantic, pyyaml
and the standard library; ``stimuli``, ``experiment_server`` and ``analysis`` import ``contracts``
and never one another; ``psychinterp`` (the command line) may import them all.
"""
