"""mmode: real-time M-mode ultrasound.

Sub-packages, one per stage of the data flow (see docs/ARCHITECTURE.md):
``mmode.ingest`` (metadata, files, simulator, streams), ``mmode.dsp`` (numba kernels),
``mmode.models`` (compressed CNNs), ``mmode.app`` (engine, CLI), ``mmode.gui`` (Qt).
"""

__version__ = "0.2.0"
