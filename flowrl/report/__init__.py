"""Rendering schedules for people: the text report (:mod:`~flowrl.report.text`), Chrome
traces (:mod:`~flowrl.report.trace`), memory plots (:mod:`~flowrl.report.plot`) and the
``--profile`` comparison (:mod:`~flowrl.report.profile`). Used by the CLI and benchmarks
only; the compiler and runtimes never import it.
"""
