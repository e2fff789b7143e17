"""lookout-listener: supervisord event listener that turns process state changes into alerts."""

__version__ = "0.1.0"
