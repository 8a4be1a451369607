"""The instructor's machinery: lab checks, student labs generated from solutions, and grading.

Nothing here is course content; a student meets only :mod:`cvdl.grading.labcheck`, through the
``check(...)`` calls in a lab's test cells.

- ``cvdl.grading.labcheck`` — ``check(fn, [Case(...)], ref=...)``: one declaration read by
  students, nbgrader and the grader (assert / record / harness modes);
- ``cvdl.grading._refs``    — the trusted references the checks compare against (``refs.conv2d``, ...);
  not in the grader's sandbox;
- ``cvdl.grading.labs``     — labs/ generated from solutions/ (nbgrader format); the static check of
  answers; splicing submissions;
- ``cvdl.grading.grade``    — ``cvdl grade``: sandboxed, resumable batch grading (docs/grading.md);
- ``cvdl.grading.limits``   — limits on a sandbox as a whole: a cgroup, or a watchdog;
- ``cvdl.grading.labrun``   — the only code that runs beside a student's cells, inside the sandbox;
- ``cvdl.grading.cli``      — the ``cvdl`` command (``cvdl labs generate``, ``cvdl grade``).
"""
