"""A window that shows the face frame kept in a PNG file (`ohlora chat` starts it as its own process).

A separate process keeps Tk away from the chat's main thread (which must stay in input()
so Ctrl+C works) and closes with the chat on Ctrl+C.
"""

from __future__ import annotations

import base64
import os
import sys


def show(path: str, scale: int = 2) -> None:
    import tkinter as tk

    root = tk.Tk()
    root.title("Oh-LoRA")
    label = tk.Label(root, bg="black", borderwidth=0, highlightthickness=0)
    label.pack()
    seen = [0.0]

    def refresh() -> None:
        try:
            mtime = os.stat(path).st_mtime
            if mtime != seen[0]:
                with open(path, "rb") as fh:
                    photo = tk.PhotoImage(data=base64.b64encode(fh.read()).decode())
                if scale > 1:
                    photo = photo.zoom(scale)
                label.configure(image=photo)
                label.image = photo  # keep a reference, or Tk drops the picture
                seen[0] = mtime
        except (OSError, tk.TclError):
            pass  # the file is being replaced; try again next tick
        root.after(40, refresh)

    refresh()
    root.mainloop()


if __name__ == "__main__":
    show(sys.argv[1])
