"""Emulators for the api crate's AWS and SMTP adapter tests, started by scripts/test.

Runs moto's server (KMS, SES v2, SNS) and an aiosmtpd SMTP sink that stores every message in
a Maildir, both on ephemeral 127.0.0.1 ports chosen by the kernel (no port races), writes
their addresses as shell assignments to OUT_FILE once both listen, then serves until it
receives SIGTERM or SIGINT.

usage: emulators.py OUT_FILE MAILDIR
"""

import os
import signal
import socket
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from moto.server import ThreadedMotoServer


class BoundController(Controller):
    """An aiosmtpd controller serving on a socket that is already bound."""

    def __init__(self, handler, sock):
        super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1])
        self._sock = sock

    def _create_server(self):
        return self.loop.create_server(
            self._factory_invoker, sock=self._sock, ssl=self.ssl_context
        )


def main():
    out_file, maildir = sys.argv[1], sys.argv[2]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    moto_host, moto_port = moto.get_host_and_port()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    smtp = BoundController(Mailbox(maildir), sock)
    smtp.start()

    partial = out_file + ".partial"
    with open(partial, "w", encoding="utf-8") as out:
        out.write(f"BEDSIDE_TEST_MOTO_URL=http://{moto_host}:{moto_port}\n")
        out.write(f"BEDSIDE_TEST_SMTP_ADDR=127.0.0.1:{smtp.port}\n")
        out.write(f"BEDSIDE_TEST_SMTP_MAILDIR={maildir}\n")
    os.replace(partial, out_file)

    stop.wait()
    smtp.stop()
    moto.stop()


if __name__ == "__main__":
    main()
