"""posed: pose estimation for animal behaviour labs.

The distribution maps three folders into this namespace: ``daemon/`` (``posed.daemon``),
``engines/`` (``posed.engines``) and ``exporters/`` (``posed.exporters``). Importing ``posed``
is cheap: no deep-learning framework is imported until an engine is used.
"""

__version__ = "0.1.0"
