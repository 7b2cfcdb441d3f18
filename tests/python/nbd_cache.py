"""A disk with a volatile write cache, served over NBD to qemu.

Real disks (SD cards, USB sticks, most SSDs) acknowledge a write when it is in
their cache and put it on the medium later; only a flush promises that what
was written before it is on the medium. When the power goes, each write not
yet flushed may have landed or not, in any order. A SIGKILL of qemu with its
disk in a host file never shows that: every write qemu passed on is in the
host's page cache and survives. So the power-cut harness serves the disk from
here instead:

- a write is held (the guest reads it back) until the next flush;
- a flush puts every held write into the backing file;
- when the connection ends without a flush (qemu was killed: the power cut),
  each held write, split into 4 KiB blocks, lands or not at random, and those
  that land do so in random order (two held writes to one block may land
  older-over-newer).

Only what the NBD protocol needs for qemu is spoken: the fixed newstyle
handshake with NBD_OPT_GO or NBD_OPT_EXPORT_NAME, simple replies, and the
commands READ, WRITE, FLUSH and DISC.
"""

import os
import random
import socket
import struct
import threading

BLOCK = 4096

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
FLAG_HAS_FLAGS = 1
FLAG_SEND_FLUSH = 1 << 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
REP_ERR_UNSUP = (1 << 31) + 1
INFO_EXPORT = 0

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3

EINVAL = 22


class CachedDisk:
    """The backing file plus the writes held since the last flush."""

    def __init__(self, path, rng):
        self.file = open(path, "r+b")
        self.size = os.path.getsize(path)
        self.rng = rng
        # block number -> the block as the guest sees it (held writes applied)
        self.view = {}
        # every held write, split at block boundaries: (offset, bytes)
        self.held = []
        self.cuts = []

    def _block(self, n):
        if n not in self.view:
            self.file.seek(n * BLOCK)
            self.view[n] = bytearray(self.file.read(BLOCK).ljust(BLOCK, b"\0"))
        return self.view[n]

    def read(self, offset, length):
        out = bytearray()
        while length > 0:
            n, at = divmod(offset, BLOCK)
            take = min(length, BLOCK - at)
            if n in self.view:
                out += self.view[n][at : at + take]
            else:
                self.file.seek(offset)
                out += self.file.read(take)
            offset += take
            length -= take
        return bytes(out)

    def write(self, offset, data):
        done = 0
        while done < len(data):
            n, at = divmod(offset + done, BLOCK)
            take = min(len(data) - done, BLOCK - at)
            piece = data[done : done + take]
            self._block(n)[at : at + take] = piece
            self.held.append((offset + done, piece))
            done += take

    def flush(self):
        for offset, piece in self.held:
            self.file.seek(offset)
            self.file.write(piece)
        self.file.flush()
        self.held.clear()
        self.view.clear()

    def cut(self):
        """The power goes: each held block write lands or not, in random order."""
        landing = [w for w in self.held if self.rng.random() < 0.5]
        self.rng.shuffle(landing)
        for offset, piece in landing:
            self.file.seek(offset)
            self.file.write(piece)
        self.file.flush()
        self.cuts.append({"held": len(self.held), "landed": len(landing)})
        self.held.clear()
        self.view.clear()

    def close(self):
        self.file.close()


def _recv(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _option_reply(conn, option, kind, payload=b""):
    conn.sendall(struct.pack(">QIII", REPLY_MAGIC, option, kind, len(payload)) + payload)


def _handshake(conn, size):
    """Returns once the client has chosen the export."""
    flags = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES
    conn.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, flags))
    (client_flags,) = struct.unpack(">I", _recv(conn, 4))
    transmission = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH
    while True:
        magic, option, length = struct.unpack(">QII", _recv(conn, 16))
        if magic != IHAVEOPT:
            raise ValueError("not an NBD option")
        _recv(conn, length)
        if option == OPT_EXPORT_NAME:
            zeroes = b"" if client_flags & FLAG_NO_ZEROES else b"\0" * 124
            conn.sendall(struct.pack(">QH", size, transmission) + zeroes)
            return
        if option == OPT_GO:
            info = struct.pack(">HQH", INFO_EXPORT, size, transmission)
            _option_reply(conn, option, REP_INFO, info)
            _option_reply(conn, option, REP_ACK)
            return
        if option == OPT_ABORT:
            _option_reply(conn, option, REP_ACK)
            raise EOFError
        _option_reply(conn, option, REP_ERR_UNSUP)


def _serve(conn, disk, trigger):
    """Answers requests until the client goes; True if it said goodbye.
    `trigger` is the server: once its armed count of writes has arrived, the
    power is gone: nothing more is answered or done."""
    while True:
        magic, _flags, kind, handle, offset, length = struct.unpack(">IHHQQI", _recv(conn, 28))
        if magic != REQUEST_MAGIC:
            raise ValueError("not an NBD request")
        out_of_range = offset + length > disk.size
        error, payload = 0, b""
        if kind == CMD_WRITE:
            data = _recv(conn, length)
            if out_of_range:
                error = EINVAL
            else:
                disk.write(offset, data)
                if trigger.write_arrived():
                    while conn.recv(1 << 16):
                        pass
                    return False
        elif kind == CMD_READ:
            if out_of_range:
                error = EINVAL
            else:
                payload = disk.read(offset, length)
        elif kind == CMD_FLUSH:
            disk.flush()
        elif kind == CMD_DISC:
            return True
        else:
            error = EINVAL
        conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, error, handle) + payload)


class Server:
    """Serves `path` on a loopback port, one client at a time. A client that
    goes without a flush (killed) is a power cut of the cache."""

    def __init__(self, path, seed):
        self.disk = CachedDisk(path, random.Random(seed))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.idle = threading.Event()
        self.idle.set()
        self.lock = threading.Lock()
        self.writes_left = None
        self.powered_off = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.idle.clear()
            try:
                _handshake(conn, self.disk.size)
                if _serve(conn, self.disk, self):
                    self.disk.flush()
                else:
                    self.disk.cut()
            except (EOFError, ConnectionError):
                self.disk.cut()
            except Exception as e:  # a protocol error: still a cut
                print(f"nbd_cache: {e!r}; treated as a power cut")
                self.disk.cut()
            finally:
                conn.close()
                self.idle.set()

    def arm(self, writes):
        """Cuts the power when `writes` more write requests have arrived
        (the last one held, none answered after it): a cut in the middle of
        whatever the guest was writing, a commit's pages or its ext4 journal
        blocks before their flush. `powered_off` is set then; the client is
        to be killed."""
        with self.lock:
            self.writes_left = writes

    def write_arrived(self):
        with self.lock:
            if self.writes_left is None:
                return False
            self.writes_left -= 1
            if self.writes_left > 0:
                return False
        self.powered_off.set()
        return True

    def wait_idle(self, timeout):
        """Waits for the last client's cut to be applied."""
        if not self.idle.wait(timeout):
            raise TimeoutError("the NBD server did not finish with its client")

    def close(self):
        self.listener.close()
        self.disk.close()
