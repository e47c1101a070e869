"""What both training tools (``tools/train_net.py``, ``tools/train_mlzsl.py``) do around their work:
one run per ``OUTPUT_DIR``, detectron2's ``default_setup``, the zsdet log file, and ``launch`` with
one-line errors for bad settings, input files or a GPU that cannot be used."""
import contextlib
import sys

from detectron2.engine import default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import get_zsdet_cfg
from .cuda_check import CudaUnavailable, check_cuda_request
from .output_lock import OutputDirBusy, exclusive_output_dir
from .settings_check import setting

__all__ = ["output_dir_setup", "launch_tool"]


@contextlib.contextmanager
def output_dir_setup(cfg, args):
    """Hold the lock of ``cfg.OUTPUT_DIR`` (a second run on the folder is refused), then run
    ``default_setup`` (which writes ``config.yaml`` there) and log the ``zsdet`` logger to its
    ``log.txt``, for the block."""
    with exclusive_output_dir(cfg.OUTPUT_DIR):
        comm.synchronize()  # no rank writes to OUTPUT_DIR before the lock is held
        default_setup(cfg, args)
        setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="zsdet")
        yield


def launch_tool(main, args, device_key: str) -> None:
    """``launch(main, ...)`` with the processes of ``args`` (``--num-gpus`` etc.), once the config's
    ``device_key`` (e.g. ``MODEL.DEVICE``) is checked: a GPU asked for that torch cannot use is named
    with the reason (:mod:`.cuda_check`) before detectron2's ``launch`` asserts. That, bad settings or
    input files (``FileNotFoundError`` / ``KeyError`` / ``ValueError``, a busy ``OUTPUT_DIR``) end
    the tool with one line ``error: ...`` and exit status 1."""
    try:
        check_cuda_request(setting(get_zsdet_cfg(args.config_file, args.opts), device_key), device_key)
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (FileNotFoundError, KeyError, ValueError, OutputDirBusy, CudaUnavailable) as e:
        sys.exit(f"error: {e.args[0] if isinstance(e, KeyError) else e}")  # KeyError str() quotes
