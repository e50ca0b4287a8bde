"""Logging for component processes: our messages at INFO, third-party chatter (TBE, planner) at WARNING.

A step's own error, for the person who started the run: when the environment names a file in
STEP_ERROR_ENV (`nmtrec run` sets it per step), an exception that ends the step is written there as
JSON ({"type", "message", "ours"}) before Python prints its traceback into the step's log, so the
runner can print the message once instead of a runner traceback.
"""
import json
import logging
import os
import sys
import warnings

STEP_ERROR_ENV = "NMTREC_STEP_ERROR_FILE"

# loggers whose warnings a user cannot act on (TorchRec's topology/planner notes, fbgemm's kernel choices)
_QUIET = ("torchrec", "fbgemm_gpu", "torch.distributed", "apache_beam", "matplotlib")


def setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # kfp's executor sets up the root logger at INFO first (basicConfig is then a no-op) and fbgemm logs
    # every TBE's arguments through it; our "nmtrec" logger still reaches the handlers via propagation.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("nmtrec").setLevel(logging.INFO)
    for name in _QUIET:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    install_error_hook()


def error_record(exc: BaseException) -> dict:
    """{"type", "message", "ours"}: `ours` when the exception is one of nmtrec's own (its message names
    the file, line, column or key), else the message is the exception's type and text."""
    cls = type(exc)
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "message": str(exc) or cls.__name__,
            "ours": cls.__module__.startswith("nmtrec.")}


def write_step_error(exc: BaseException, path: str | None = None) -> None:
    path = path or os.environ.get(STEP_ERROR_ENV)
    if not path:
        return
    try:  # the first error wins: a torchrun worker's own error, not the launcher's summary of it
        with open(path, "x") as f:
            json.dump(error_record(exc), f)
    except OSError:  # already written (or not writable): keep what is there
        pass


def install_error_hook() -> None:
    """Record the exception that ends this process (see the module docstring); idempotent."""
    if getattr(sys.excepthook, "_nmtrec", False) or not os.environ.get(STEP_ERROR_ENV):
        return
    previous = sys.excepthook

    def hook(kind, exc, tb):
        write_step_error(exc)
        previous(kind, exc, tb)

    hook._nmtrec = True
    sys.excepthook = hook
