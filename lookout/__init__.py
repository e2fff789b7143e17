"""supervisor-lookout: health monitoring and alerting for processes run under supervisord.

Installed as one package so it claims no generic top-level names:
    lookout.listener   lookout-listener, the supervisord event listener   (repository: listener/)
    lookout.exporter   lookout-exporter, the Prometheus exporter           (repository: exporter/)
    lookout            the operator's `lookout` command                     (repository: lookout/)
"""

__version__ = "0.2.0"
