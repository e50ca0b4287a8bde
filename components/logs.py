"""Logging for component processes: our messages at INFO, third-party chatter (TBE, planner) at WARNING."""
import logging
import warnings


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("nmtrec").setLevel(logging.INFO)
    warnings.filterwarnings("ignore")
