"""One warning per distinct message and process: the backend choice and kernel fallbacks repeat every call."""
import logging

log = logging.getLogger("vorta")
_logged: set = set()


def log_once(msg: str) -> None:
    if msg not in _logged:
        _logged.add(msg)
        log.warning(msg)
