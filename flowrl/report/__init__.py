"""Rendering schedules for people: the text report (:mod:`~flowrl.report.text`), Chrome
traces (:mod:`~flowrl.report.trace`), memory plots (:mod:`~flowrl.report.plot`) and the
``--profile`` comparison (:mod:`~flowrl.report.profile`). Used by the CLI and benchmarks
only; the compiler and runtimes never import it.
"""

from flowrl.ir.schedule import RENDERERS
from flowrl.report.plot import plot_memory
from flowrl.report.text import explain_text
from flowrl.report.trace import write_chrome_trace

# Back Schedule.explain() / to_chrome_trace() / plot_memory() without the ir importing us.
RENDERERS.update(explain=explain_text, to_chrome_trace=write_chrome_trace,
                 plot_memory=plot_memory)
