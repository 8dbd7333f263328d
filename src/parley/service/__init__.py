"""Application services: the one layer that checks permissions, changes state
through the ``Store`` port and emits the resulting events after commit."""
