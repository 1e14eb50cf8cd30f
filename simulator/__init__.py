"""attnres-pipesim's simulator: scenarios, schedules, the AttnRes boundary manifest, memory, and the
SimPy discrete-event model of a pipeline-parallel training step.

Never imports torch; matplotlib only inside plotting functions.
"""

__version__ = "0.1.0"
