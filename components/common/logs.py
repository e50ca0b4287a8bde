"""Logging for component processes: our messages at INFO, third-party chatter (TBE, planner) at WARNING."""
import logging
import warnings


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # kfp's executor sets up the root logger at INFO first (basicConfig is then a no-op) and fbgemm logs
    # every TBE's arguments through it; our "nmtrec" logger still reaches the handlers via propagation.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("nmtrec").setLevel(logging.INFO)
    warnings.filterwarnings("ignore")
