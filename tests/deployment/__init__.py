"""Fresh machines for the README's deployment guide (tests/test_guide.py).

* ``guide``   — the guide's command blocks, read from README.md with the machines each runs on;
* ``machine`` — a pretend fresh Debian machine: a host of a ``tools.netns.Lan`` whose ``/etc``,
  ``/opt``, ``/srv``, ``/tmp`` and Firebird folders are its own, with the Firebird server the
  shop's application would use, running the guide's commands as root;
* ``bin/``    — the two programs a test cannot have for real and that the guide calls:
  ``systemctl`` (systemd is not PID 1 here: it reads the installed unit, checks it with
  ``systemd-analyze verify`` and starts its ``ExecStart`` as its ``User``, waiting for the
  ``READY=1`` of a ``Type=notify`` service) and ``scp`` (a copy between two machines' folders).
"""
