"""`ohlora chat`: the terminal client, with the original's prompt, reply line and farewell.

The reply prints as it streams; a rejected attempt is wiped from the line. The prompt comes
back as soon as the reply and the expression are in: the rest of the turn (memory, summary)
settles in the gateway while the person types, and its late warnings print when they come.
A message sent meanwhile waits in the gateway for the user's turn lock, as before. The face is
shown live in a window when a display is available; otherwise after each answer as coloured
half-block art (or inline in kitty / iTerm2), and/or kept in a file; frames come from a Watch
stream running in the background.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import tempfile
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
from PIL import Image

from ohlora.v1 import face_pb2, gateway_pb2, gateway_pb2_grpc

PROMPT = "오로라에게 말하기 (Ctrl+C to finish) : "
SPEAKER = "👱‍♀️ 오로라 : "
FAREWELL = "[SYSTEM MESSAGE] 오로라와의 대화가 끝났습니다. 👱‍♀️👋 다음에도 오로라와 함께해 주실 거죠?"
RANDOM_FACE = "Oh-LoRA face vector selected randomly : case No. {}"
HELP = """commands:
  /memory list            what Oh-LoRA remembers about you
  /memory add [key: value] teach her a fact
  /memory forget ID       forget one memory (ids from /memory list)
  /memory export          print her memories in the original's file format
  /face [N]               choose face N (none: a random one)
  /reset                  forget the summary of the last answer
  /help                   this list"""


def safe(text: str) -> str:
    """Text from the network without control characters, so nothing can drive the terminal."""
    return "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C" or ch in "\u200d")


def half_blocks(image: Image.Image, columns: int = 40) -> str:
    """24-bit coloured '▀' characters: each cell shows two pixels (top = foreground, bottom = background)."""
    rows = columns  # square image, two pixel rows per text row
    pixels = np.asarray(image.convert("RGB").resize((columns, rows * 2), Image.Resampling.LANCZOS))
    lines = []
    for y in range(0, rows * 2, 2):
        cells = [
            f"\x1b[38;2;{t[0]};{t[1]};{t[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m▀"
            for t, b in zip(pixels[y], pixels[y + 1])
        ]
        lines.append("".join(cells) + "\x1b[0m")
    return "\n".join(lines)


def inline_image(png: bytes, terminal: str) -> str:
    data = base64.b64encode(png).decode()
    if terminal == "iterm":
        return f"\x1b]1337;File=inline=1;width=20;preserveAspectRatio=1:{data}\x07"
    chunks = [data[i : i + 4096] for i in range(0, len(data), 4096)]  # kitty graphics protocol
    out = []
    for i, chunk in enumerate(chunks):
        more = 1 if i < len(chunks) - 1 else 0
        head = "a=T,f=100," if i == 0 else ""
        out.append(f"\x1b_G{head}m={more};{chunk}\x1b\\")
    return "".join(out)


def window_available() -> bool:
    if not os.environ.get("DISPLAY"):
        return False
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return False
    return True


def choose_view(requested: str, stream: object) -> str:
    if requested != "auto":
        return requested
    if window_available():
        return "window"
    if not getattr(stream, "isatty", lambda: False)():
        return "none"
    if os.environ.get("TERM") == "xterm-kitty":
        return "kitty"
    if os.environ.get("TERM_PROGRAM") == "iTerm.app":
        return "iterm"
    return "halfblock"


def block_interrupts() -> None:
    """In helper threads: let Ctrl+C reach the main thread, which is waiting in input()."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


@dataclass
class FaceFeed:
    """Keeps the latest frame of a Watch stream (background thread)."""

    stub: gateway_pb2_grpc.GatewayStub
    metadata: tuple[tuple[str, str], ...]
    file: str | None = None
    latest: bytes | None = None
    frames: int = 0

    def start(self, fps: float = 10.0) -> None:
        self.call = self.stub.Watch(gateway_pb2.WatchRequest(fps=fps, format=face_pb2.IMAGE_FORMAT_PNG), metadata=self.metadata)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        block_interrupts()
        try:
            for frame in self.call:
                self.latest = frame.image
                self.frames += 1
                if self.file:
                    tmp = f"{self.file}.tmp"
                    with open(tmp, "wb") as fh:
                        fh.write(frame.image)
                    os.replace(tmp, self.file)
        except grpc.RpcError:
            pass

    def stop(self) -> None:
        self.call.cancel()


class FaceWindow:
    """The live face in a window: a viewer process shows the PNG file the feed keeps current."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "ohlora.face_window", self.path])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()


class ChatClient:
    def __init__(self, stub: gateway_pb2_grpc.GatewayStub, metadata: tuple[tuple[str, str], ...],
                 out: Callable[[str], None], view: str) -> None:
        self.stub = stub
        self.metadata = metadata
        self.out = out
        self.view = view
        self.face: FaceFeed | None = None
        self.at_prompt = False  # the main thread waits in input(): a late line reprints the prompt after it
        self.settling: threading.Thread | None = None

    def show_face(self) -> None:
        if self.face is None or self.face.latest is None or self.view in ("none", "file", "window"):
            return
        if self.view == "halfblock":
            self.out(half_blocks(Image.open(io.BytesIO(self.face.latest))) + "\n")
        else:
            self.out(inline_image(self.face.latest, self.view) + "\n")

    def turn(self, text: str) -> None:
        """Prints the reply as it streams; returns once the reply and the expression are in (or the turn failed),
        leaving the rest of the turn's events to a background thread (settle_in_background)."""
        shown = ""
        started = False
        events = iter(self.stub.Chat(gateway_pb2.ChatRequest(text=text), metadata=self.metadata))
        for event in events:
            kind = event.WhichOneof("kind")
            if kind == "reply_delta":
                if not started:
                    self.out(SPEAKER)
                    started = True
                shown += event.reply_delta
                self.out(safe(event.reply_delta))
            elif kind == "reply_reset" and shown:
                self.out("\r\x1b[2K" + SPEAKER)  # wipe the rejected attempt
                shown = ""
            elif kind == "reply_final":
                if not started:
                    self.out(SPEAKER)
                    started = True
                if shown != event.reply_final:
                    self.out("\r\x1b[2K" + SPEAKER + safe(event.reply_final))
                self.out("\n")
            elif kind == "warning":
                self.out(f"[warning] {safe(event.warning)}\n")
            elif kind == "error":
                if started and not shown.endswith("\n"):
                    self.out("\n")
                self.out(f"{safe(event.error.message)}\n")
            if kind in ("expression", "error"):
                break
        self.show_face()
        self.settle_in_background(events)

    def settle_in_background(self, events) -> None:
        """Reads the rest of a turn (memory and summary being written) and prints its late warnings and errors."""
        def drain() -> None:
            block_interrupts()
            try:
                for event in events:
                    if event.HasField("warning"):
                        self.late(f"[warning] {safe(event.warning)}")
                    elif event.HasField("error"):
                        self.late(safe(event.error.message))
            except grpc.RpcError:
                pass  # the chat is ending; the gateway finishes the turn on its own

        self.settling = threading.Thread(target=drain, daemon=True)
        self.settling.start()

    def late(self, line: str) -> None:
        """A line that arrives after the prompt came back: printed on its own line, then the prompt again."""
        self.out(f"\n{line}\n{PROMPT}" if self.at_prompt else f"{line}\n")

    def command(self, line: str) -> None:
        parts = line.split(maxsplit=2)
        name = parts[0]
        md = self.metadata
        try:
            if name == "/help":
                self.out(HELP + "\n")
            elif name == "/memory" and len(parts) >= 2 and parts[1] == "list":
                memories = self.stub.ListMemories(gateway_pb2.ListMemoriesRequest(), metadata=md).memories
                self.out("".join(f"  {m.id}  {safe(m.text)}\n" for m in memories) or "  (no memories yet)\n")
            elif name == "/memory" and len(parts) == 3 and parts[1] == "add":
                added = self.stub.AddMemory(gateway_pb2.AddMemoryRequest(text=parts[2]), metadata=md)
                self.out(f"  remembered {safe(added.text)} ({added.id})\n")
            elif name == "/memory" and len(parts) == 3 and parts[1] == "forget":
                gone = self.stub.ForgetMemory(gateway_pb2.ForgetMemoryRequest(id=parts[2]), metadata=md).forgotten
                self.out("  forgotten\n" if gone else f"  no memory with id {parts[2]}\n")
            elif name == "/memory" and len(parts) >= 2 and parts[1] == "export":
                self.out(safe(self.stub.ExportMemories(gateway_pb2.ExportMemoriesRequest(), metadata=md).content))
            elif name == "/face":
                self.choose_face(int(parts[1]) if len(parts) > 1 else None)
            elif name == "/reset":
                self.stub.ResetSummary(gateway_pb2.ResetSummaryRequest(), metadata=md)
                self.out("  the summary of the last answer is forgotten\n")
            else:
                self.out(f"unknown command {safe(line)!r}; /help lists them\n")
        except grpc.RpcError as exc:
            self.out(f"  {exc.code().name}: {safe(exc.details() or '')}\n")
        except ValueError:
            self.out("  /face takes a face number\n")

    def choose_face(self, face: int | None) -> None:
        request = gateway_pb2.ChooseFaceRequest(face_id=face) if face is not None else gateway_pb2.ChooseFaceRequest()
        chosen = self.stub.ChooseFace(request, metadata=self.metadata)
        if chosen.random:
            self.out(RANDOM_FACE.format(chosen.face_id) + "\n")
        else:
            self.out(f"Oh-LoRA face: case No. {chosen.face_id}\n")


def call_metadata(user: str, token: str | None) -> tuple[tuple[str, str], ...]:
    metadata: tuple[tuple[str, str], ...] = (("x-ohlora-user", user),)  # gateway/auth.py USER_KEY
    if token:
        metadata += (("authorization", f"Bearer {token}"),)
    return metadata


def converse(stub: gateway_pb2_grpc.GatewayStub, user: str, texts: list[str]) -> list[gateway_pb2.Turn]:
    """Says `texts` as one user's turns, each to its settled end, and returns the turns the gateway logged, oldest
    first (for benchmarks and scripts that read whole conversations: the final inputs, memories and replies)."""
    metadata = call_metadata(user, None)
    for text in texts:
        for _ in stub.Chat(gateway_pb2.ChatRequest(text=text), metadata=metadata):
            pass
    return list(stub.ListTurns(gateway_pb2.ListTurnsRequest(limit=len(texts)), metadata=metadata).turns)


def run_chat(address: str, user: str, token: str | None, face: int | None, view: str, face_file: str | None) -> int:
    # Ctrl+C ends the chat even when this process started with SIGINT ignored (a background job of a
    # non-interactive shell, nohup): Python keeps an inherited SIG_IGN, and the prompt could not be left.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    out = lambda text: (sys.stdout.write(text), sys.stdout.flush())  # noqa: E731
    metadata = call_metadata(user, token)
    channel = grpc.insecure_channel(address)
    stub = gateway_pb2_grpc.GatewayStub(channel)
    client = ChatClient(stub, metadata, out, choose_view(view, sys.stdout))
    window: FaceWindow | None = None
    try:
        grpc.channel_ready_future(channel).result(timeout=15)
        client.choose_face(face)
        if client.view == "window" and not face_file:
            face_file = os.path.join(tempfile.mkdtemp(prefix="ohlora-face-"), "face.png")
        if client.view != "none" or face_file:
            client.face = FaceFeed(stub, metadata, face_file)
            client.face.start()
        if client.view == "window":
            window = FaceWindow(face_file)
            window.start()
        while True:
            client.at_prompt = True
            text = input("\n" + PROMPT)
            client.at_prompt = False
            if text.startswith("/"):
                client.command(text.strip())
            elif text.strip():
                client.turn(text)
    except (KeyboardInterrupt, EOFError):
        out("\n" + FAREWELL + "\n")
        return 0
    except grpc.FutureTimeoutError:
        out(f"error : cannot reach the gateway at {address}\n")
        return 1
    except grpc.RpcError as exc:
        out(f"error : {exc.code().name}: {safe(exc.details() or '')}\n")
        return 1
    finally:
        if window is not None:
            window.stop()
        if client.face is not None:
            client.face.stop()
        channel.close()
