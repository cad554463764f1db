"""Socket files of the listeners: which ones are replaced, taken over or left.

Every scenario runs on both the default event loop and uvloop.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

import pytest

from tests.daemon.test_listeners import BUFFER, Arrivals
from tocsin.daemon.listeners import bind, open_unix_dgram, open_unix_stream


def test_stale_socket_file_is_replaced(run, tmp_path):
    path = str(tmp_path / "dsd.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
        dead.bind(path)
    os.chmod(path, 0o700)

    async def scenario():
        arrivals = Arrivals()
        listener = await open_unix_dgram(
            path, arrivals.on_datagram, receive_buffer=BUFFER
        )
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o722
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"m:1|c", path)
            await arrivals.until(lambda: arrivals.sink.samples)
        listener.close()

    run(scenario)


def test_a_regular_file_is_never_replaced(run, tmp_path):
    path = tmp_path / "dsd.sock"
    path.write_text("keep me")

    async def scenario():
        with pytest.raises(FileExistsError):
            await open_unix_dgram(str(path), print, receive_buffer=BUFFER)
        with pytest.raises(FileExistsError):
            await open_unix_stream(str(path), print)

    run(scenario)

    assert path.read_text() == "keep me"


def test_a_live_socket_is_never_taken_over(run, tmp_path):
    dgram_path = str(tmp_path / "dsd.sock")
    stream_path = str(tmp_path / "ndjson.sock")

    async def scenario():
        first = await open_unix_dgram(dgram_path, print, receive_buffer=BUFFER)
        stream = await open_unix_stream(stream_path, print)
        with pytest.raises(OSError) as refused:
            await open_unix_dgram(dgram_path, print, receive_buffer=BUFFER)
        assert refused.value.errno == errno.EADDRINUSE
        with pytest.raises(OSError) as refused:
            await open_unix_stream(stream_path, print)
        assert refused.value.errno == errno.EADDRINUSE
        assert os.path.exists(dgram_path) and os.path.exists(stream_path)
        first.close()
        stream.close()
        await stream.wait_closed()

    run(scenario)


def test_a_live_socket_of_the_other_type_is_never_taken_over(run, tmp_path):
    dgram_path = str(tmp_path / "dsd.sock")
    stream_path = str(tmp_path / "ndjson.sock")

    async def scenario():
        dgram = await open_unix_dgram(dgram_path, print, receive_buffer=BUFFER)
        stream = await open_unix_stream(stream_path, print)
        # A datagram listener where a stream one should go, and the reverse.
        for opening in (
            open_unix_stream(dgram_path, print),
            open_unix_dgram(stream_path, print, receive_buffer=BUFFER),
        ):
            with pytest.raises(OSError) as refused:
                await opening
            assert refused.value.errno == errno.EADDRINUSE
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"still:1|c", dgram_path)
        dgram.close()
        stream.close()
        await stream.wait_closed()

    run(scenario)


def test_close_leaves_a_socket_file_that_is_not_its_own(run, tmp_path):
    path = str(tmp_path / "dsd.sock")

    async def scenario():
        listener = await open_unix_dgram(path, print, receive_buffer=BUFFER)
        # A newer process moved ours aside and bound its own in its place.
        os.rename(path, path + ".old")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as newer:
            newer.bind(path)
            listener.close()
            listener.close()
            assert os.path.exists(path)
            assert os.path.exists(path + ".old")

    run(scenario)


def test_a_socket_handed_over_is_used_and_its_file_left(run, tmp_path):
    path = str(tmp_path / "activated.sock")

    async def scenario():
        arrivals = Arrivals()
        handed = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        handed.bind(path)
        os.chmod(path, 0o700)
        listener = await open_unix_dgram(
            "ignored", arrivals.on_datagram, receive_buffer=BUFFER, sock=handed
        )
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"m:1|g", path)
            await arrivals.until(lambda: arrivals.sink.samples)
        listener.close()

        assert listener.address == path
        assert os.path.exists(path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700

    run(scenario)


def test_a_binding_queues_datagrams_until_its_listener_reads_them(run, tmp_path):
    path = str(tmp_path / "dsd.sock")

    async def scenario():
        arrivals = Arrivals()
        binding = bind("unix_dgram", path)
        # Sent before anyone listens: the kernel holds it for the listener.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"early:1|c", path)
        listener = await open_unix_dgram(
            path, arrivals.on_datagram, receive_buffer=BUFFER, sock=binding
        )
        await arrivals.until(lambda: arrivals.sink.samples)
        binding.close()
        assert os.path.exists(path)
        listener.close()

        assert [sample.name for sample in arrivals.sink.samples] == ["early"]
        assert not os.path.exists(path)

    run(scenario)


@pytest.mark.parametrize("name", ["unix_dgram", "unix_stream"])
def test_a_binding_never_listened_on_leaves_no_file(tmp_path, name):
    path = str(tmp_path / "ingest.sock")
    binding = bind(name, path)
    assert binding.address == path

    binding.close()
    binding.close()

    assert not os.path.exists(path)
