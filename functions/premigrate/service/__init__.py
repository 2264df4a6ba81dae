"""The application service: settings, connecting, running an action, and the error map, for every front door.

The CLI and the Lambda's triggers only translate: argv or an event in, a ``Request`` and ``Config`` to
``Service.run``, its ``Result`` out.
"""

from premigrate.service.observer import Observer
from premigrate.service.service import ACTIONS, EXIT_CODES, Category, Request, Result, Service, failure
from premigrate.service.settings import SPECS, Config, load_config

__all__ = [
    "ACTIONS",
    "EXIT_CODES",
    "SPECS",
    "Category",
    "Config",
    "Observer",
    "Request",
    "Result",
    "Service",
    "failure",
    "load_config",
]
