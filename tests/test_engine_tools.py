"""The tool runner shared by the server engines."""

import fcntl
import sys

import pytest

from covet.engines.tools import PIPE_SIZE, ToolStream, tool_env


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="pipe sizes are a Linux feature")
def test_a_tool_writes_into_a_widened_pipe_and_every_byte_arrives(tmp_path):
    script = "import sys; sys.stdout.buffer.write(bytes(range(256)) * 40_000)"
    with ToolStream([sys.executable, "-c", script], tool_env(), "writer", tmp_path / "stderr") as stream:
        assert fcntl.fcntl(stream.process.stdout.fileno(), fcntl.F_GETPIPE_SZ) >= PIPE_SIZE
        data = stream.read()
    assert data == bytes(range(256)) * 40_000
