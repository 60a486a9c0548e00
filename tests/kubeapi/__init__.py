"""A Kubernetes API emulator for tests (never shipped).

See ``tests/kubeapi/server.py`` for the HTTP server (:class:`Emulator`, :class:`EmulatorThread`) and
``tests/kubeapi/validation.py`` for CRD schema validation usable without a server.
"""
