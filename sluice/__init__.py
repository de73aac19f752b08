"""The whole system: the `sluice` command line and `sluice serve`'s composition.

The only package that imports bridge, signaling and bench together; those stay apart (bridge and signaling
share only the neutral colibri2 package), which tests/unit/test_layout.py checks.
"""
