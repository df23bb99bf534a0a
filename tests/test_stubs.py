"""The type stubs of the compiled module (`python/recofast/_core.pyi`) match it exactly."""

import subprocess
import sys


def test_core_stubs_match_the_compiled_module(tmp_path):
    # Run in tmp_path: mypy writes its cache in the working directory.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "recofast._core"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    print(output)
    assert proc.returncode == 0, output
    assert "Success" in output
