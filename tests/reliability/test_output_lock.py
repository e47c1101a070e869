"""Issue 10 item 6: a second run on a busy OUTPUT_DIR is refused with a message; the lock of a
killed run does not block a rerun."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from zsdet.engine.output_lock import LOCK_NAME, OutputDirBusy, exclusive_output_dir

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "quick_schedules" / "zsd_shapes_tiny_instant_test.yaml"

HOLDER = textwrap.dedent("""
    import sys
    from zsdet.engine.output_lock import exclusive_output_dir
    with exclusive_output_dir(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until killed
""")


@pytest.fixture
def holder(tmp_path):
    """A live process holding the lock on ``tmp_path / 'out'``."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield out, proc
    proc.kill()
    proc.wait()


def test_second_run_is_refused_and_a_killed_holder_does_not_block(holder):
    out, proc = holder
    run = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", str(CONFIG),
                          "--stages", "detector", "OUTPUT_DIR", str(out)], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode != 0
    assert f"OUTPUT_DIR {out} is in use by another run (pid {proc.pid}" in run.stderr
    assert not (out / "config.yaml").exists() and not (out / "log.txt").exists()  # refused before any write

    with pytest.raises(OutputDirBusy, match="in use by another run"):
        with exclusive_output_dir(str(out)):
            pass
    proc.send_signal(signal.SIGKILL)  # no cleanup: the lock file stays, the kernel drops the lock
    proc.wait()
    assert (out / LOCK_NAME).exists()
    with exclusive_output_dir(str(out)):
        assert f"pid {os.getpid()}" in (out / LOCK_NAME).read_text()


def test_classification_tool_refuses_a_busy_output_dir(holder):
    out, proc = holder
    run = subprocess.run([sys.executable, str(REPO / "tools" / "train_mlzsl.py"), "--config-file",
                          str(REPO / "configs" / "classification" / "synthetic.yaml"), "OUTPUT_DIR", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode != 0
    assert f"OUTPUT_DIR {out} is in use by another run (pid {proc.pid}" in run.stderr
    assert not (out / "config.yaml").exists() and not (out / "synthetic_data").exists()
