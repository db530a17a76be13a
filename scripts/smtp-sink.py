#!/usr/bin/env python3
"""A small SMTP sink for the tests: every message it accepts becomes one file,
`<dir>/<unique>.eml`, holding the bytes the client sent after DATA (written to a
hidden temporary name, then renamed, so a reader never sees half a mail).

    smtp-sink.py --port 2525 --dir /tmp/mails [--user U --password P]

With --user/--password the sink requires AUTH (PLAIN or LOGIN, over the plain
connection) with exactly those credentials, so a test can prove the server takes
them from its SMTP URL. Needs aiosmtpd (scripts/test-services.sh installs it).
"""

import argparse
import asyncio
import os
import signal
import time
import uuid
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class SinkHandler:
    def __init__(self, directory):
        self.directory = directory

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8")
        name = f"{time.time_ns()}-{uuid.uuid4().hex}.eml"
        partial = os.path.join(self.directory, f".{name}.partial")
        with open(partial, "wb") as out:
            out.write(data)
        os.replace(partial, os.path.join(self.directory, name))
        return "250 Message accepted for delivery"


class Authenticator:
    def __init__(self, user, password):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if isinstance(auth_data, LoginPassword) and auth_data.login == self.user and auth_data.password == self.password:
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


def main():
    # AUTH without TLS is the point here (a loopback test sink): no warning about it.
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    kwargs = {}
    if args.user:
        kwargs = dict(
            authenticator=Authenticator(args.user, args.password or ""),
            auth_required=True,
            auth_require_tls=False,
        )
    controller = Controller(SinkHandler(args.dir), hostname=args.host, port=args.port, **kwargs)
    controller.start()
    print(f"smtp-sink listening on {args.host}:{args.port}, writing to {args.dir}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(stop.wait())
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
