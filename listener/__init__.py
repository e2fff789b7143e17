"""lookout-listener: supervisord event listener that turns process state changes into alerts."""

from .. import __version__ as __version__
