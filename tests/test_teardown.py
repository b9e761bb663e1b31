"""How the command's process ends (storage/teardown.py) when Delta was never loaded. In a child
process: end_process may end the process it runs in (os._exit once deltalake is loaded)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_process_ends_with_its_code_and_output_the_collector_frozen(tmp_path):
    """A buffered write to a pipe, a file closed by its `with` and the atexit hooks all come
    through; the collector is frozen, so teardown skips its passes over every object."""
    script = (f"import atexit, gc, sys; sys.path.insert(0, {str(REPO)!r})\n"
              "from storage.teardown import end_process\n"
              "atexit.register(lambda: print('frozen at exit:', gc.get_freeze_count() > 0))\n"
              f"with open({str(tmp_path / 'out.txt')!r}, 'w') as f: f.write('written')\n"
              "print('last line')\n"
              "end_process(4)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 4, done.stderr
    assert done.stdout == "last line\nfrozen at exit: True\n"
    assert (tmp_path / "out.txt").read_text() == "written"
