"""A real MLLP receiver over TCP for ORU delivery tests, answering from a script.

Each received message takes the next action: ``AA``/``AE``/``AR`` (an ACK naming the
message's MSH-10), ``wrong`` (an AA naming another message), ``stall`` (no answer) or
``drop`` (close the connection). When the script runs out it answers AA.
"""

from __future__ import annotations

import asyncio

import hl7 as python_hl7
from novaza_gateway.hl7.mllp import MllpDecoder, frame


class ScriptedReceiver:
    def __init__(self, *script: str, delay: float = 0.0) -> None:
        self.script = list(script)
        self.delay = delay  # seconds before each answer: a slow receiver
        self.received: list[bytes] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ScriptedReceiver:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def control_ids(self) -> list[str]:
        return [str(python_hl7.parse(m.decode()).segment("MSH")[10]) for m in self.received]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        decoder = MllpDecoder(1 << 22)
        try:
            while chunk := await reader.read(65536):
                for message in decoder.feed(chunk):
                    self.received.append(message)
                    action = self.script.pop(0) if self.script else "AA"
                    if action == "drop":
                        return
                    if action == "stall":
                        continue
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    control_id = str(python_hl7.parse(message.decode()).segment("MSH")[10])
                    acked = "SOMETHING-ELSE" if action == "wrong" else control_id
                    code = "AA" if action == "wrong" else action
                    ack = (
                        f"MSH|^~\\&|RIS|HOSP|NOVAZA|NOVAZA|20260301120000||ACK^R01^ACK|"
                        f"R{len(self.received)}|P|2.5.1\rMSA|{code}|{acked}|scripted\r"
                    )
                    writer.write(frame(ack.encode()))
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
