// Oh-LoRA's page: a client of `ohlora serve web` (ohlora/web/page.py). No framework, no build step.
// Model text (replies, memories, warnings, errors) is only ever inserted with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = {
  token: localStorage.getItem("ohlora.token") || "",
  user: params.get("user") || localStorage.getItem("ohlora.user") || "",
  busy: false,          // a turn is running and its reply + expression are not in yet
  composing: false,     // an IME composition (Korean syllable) is in progress
  sendAfterCompose: false,
  faceAbort: null,
  faceFrames: 0,
};
if (params.get("user")) localStorage.setItem("ohlora.user", state.user);
window.ohlora = state; // for people (and tests) looking at the page from the console

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers(extra = {}) {
  const h = { ...extra };
  if (state.token) h["Authorization"] = "Bearer " + state.token;
  if (state.user) h["X-Ohlora-User"] = state.user;
  return h;
}

async function failure(res) {
  let message = res.status + " " + res.statusText;
  try { message = (await res.json()).error.message || message; } catch (_) { /* not JSON */ }
  if (res.status === 401) askToken(message);
  return new ApiError(res.status, message);
}

async function api(method, path, body, type = "application/json") {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": type }) };
  if (body !== undefined) init.body = type === "application/json" ? JSON.stringify(body) : body;
  const res = await fetch(path, init);
  if (!res.ok) throw await failure(res);
  return res;
}

// JSON lines of a streamed response, as they arrive.
async function* lines(res) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).trim();
      buffer = buffer.slice(end + 1);
      if (line) yield JSON.parse(line);
    }
  }
}

// ------------------------------------------------------------------ chat log
function entry(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  $("log").appendChild(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

function ohloraBubble() {
  const li = entry("ohlora", "");
  const speaker = document.createElement("span");
  speaker.className = "speaker";
  speaker.textContent = "👱‍♀️ 오로라 :";
  const text = document.createElement("span");
  text.className = "text";
  li.append(speaker, text);
  return text;
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
}

async function sendTurn(text) {
  entry("user", text);
  const reply = ohloraBubble();
  setBusy(true);
  try {
    const res = await api("POST", "/api/chat", { text });
    for await (const ev of lines(res)) {
      switch (ev.type) {
        case "delta": reply.textContent += ev.text; break;
        case "reset": reply.textContent = ""; break;  // a rejected attempt: she tries again
        case "final": reply.textContent = ev.text; break;
        case "expression":
          $("expression").textContent = `eyes ${ev.eyes.toFixed(2)} · mouth ${ev.mouth.toFixed(2)} · head turn ${ev.pose.toFixed(2)}`;
          setBusy(false);  // reply and expression are in: the rest of the turn settles in the background
          break;
        case "warning": entry("warning", "⚠ " + ev.message); break;
        case "error":
          entry("error", ev.message);
          if (ev.status === 401) askToken(ev.message);
          setBusy(false);
          break;
        case "settled": refreshMemories(); break;
      }
    }
  } catch (err) {
    entry("error", err.message);
  } finally {
    if (!reply.textContent) reply.parentElement.remove();
    setBusy(false);
  }
}

// Sends what the box holds, once; the box is emptied at once so nothing is sent twice.
function send() {
  const box = $("input");
  const text = box.value.trim();
  if (!text || state.busy) return;
  box.value = "";
  sendTurn(text);
}

// Korean (and other) IMEs: the Enter that commits the last syllable arrives as a keydown with
// isComposing true, before compositionend puts that syllable into the box. Sending then would lose it
// (or send it later as a stray one-syllable message); ignoring it makes people press Enter twice.
// So that Enter is remembered, and the message goes once the composition has ended, with the
// committed text. An Enter that some browsers send after compositionend finds an empty box.
function onKeyDown(e) {
  if (e.key !== "Enter" || e.shiftKey) return;
  e.preventDefault();
  if (e.isComposing || state.composing) {
    state.sendAfterCompose = true;
    return;
  }
  send();
}

function onCompositionEnd() {
  state.composing = false;
  if (!state.sendAfterCompose) return;
  state.sendAfterCompose = false;
  setTimeout(send, 0);  // after the input event that carries the committed syllable
}

// ------------------------------------------------------------------ face
async function watchFace() {
  if (state.faceAbort) state.faceAbort.abort();
  const abort = new AbortController();
  state.faceAbort = abort;
  const img = $("face");
  while (!abort.signal.aborted) {
    try {
      const res = await fetch("/api/face", { headers: headers(), signal: abort.signal });
      if (!res.ok) throw await failure(res);
      for await (const frame of lines(res)) {
        if (frame.type === "error") throw new ApiError(frame.status, frame.message);
        img.src = "data:image/jpeg;base64," + frame.image;
        state.faceFrames += 1;
        img.dataset.frames = String(state.faceFrames);
      }
    } catch (err) {
      if (abort.signal.aborted) return;
      if (err.status === 401) return;  // the token prompt restarts the face
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function showFaces() {
  const panel = $("faces-panel");
  panel.hidden = !panel.hidden;
  if (panel.hidden) return;
  $("memory-panel").hidden = true;
  const box = $("faces");
  box.textContent = "…";
  try {
    const listed = await (await api("GET", "/api/faces")).json();
    box.textContent = "";
    for (const face of listed.faces) {
      const figure = document.createElement("figure");
      figure.dataset.face = String(face.id);
      if (face.id === listed.chosen) figure.classList.add("chosen");
      const img = document.createElement("img");
      img.src = "data:image/jpeg;base64," + face.image;
      img.alt = face.description || "face " + face.id;
      const caption = document.createElement("figcaption");
      caption.textContent = "No. " + face.id;
      figure.append(img, caption);
      figure.addEventListener("click", () => chooseFace(face.id));
      box.appendChild(figure);
    }
  } catch (err) {
    box.textContent = err.message;
  }
}

async function chooseFace(id) {
  try {
    const chosen = await (await api("POST", "/api/faces/choice", { face: id })).json();
    entry("note", chosen.random ? `Oh-LoRA face vector selected randomly : case No. ${chosen.face}` : `Oh-LoRA face: case No. ${chosen.face}`);
    for (const fig of $("faces").children) fig.classList.toggle("chosen", fig.dataset.face === String(chosen.face));
  } catch (err) {
    entry("error", err.message);
  }
}

// ------------------------------------------------------------------ memories
async function refreshMemories() {
  const list = $("memories");
  try {
    const { memories } = await (await api("GET", "/api/memories")).json();
    list.textContent = "";
    for (const m of memories) {
      const li = document.createElement("li");
      li.dataset.id = m.id;
      const text = document.createElement("span");
      text.className = "memory-text";
      text.textContent = m.text;
      const forget = document.createElement("button");
      forget.type = "button";
      forget.className = "forget";
      forget.textContent = "잊기";
      forget.title = "Forget this memory";
      forget.addEventListener("click", () => forgetMemory(m.id));
      li.append(text, forget);
      list.appendChild(li);
    }
    if (!memories.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "아직 기억이 없어요 (no memories yet)";
      list.appendChild(li);
    }
  } catch (err) {
    list.textContent = err.message;
  }
}

async function forgetMemory(id) {
  try {
    await api("DELETE", "/api/memories/" + encodeURIComponent(id));
  } catch (err) {
    entry("error", err.message);
  }
  refreshMemories();
}

async function addMemory(e) {
  e.preventDefault();
  const input = $("memory-text");
  const text = input.value.trim();
  if (!text) return;
  try {
    await api("POST", "/api/memories", { text });
    input.value = "";
  } catch (err) {
    entry("error", err.message);
  }
  refreshMemories();
}

async function importMemories() {
  const file = $("import-file").files[0];
  if (!file) return;
  try {
    const done = await (await api("POST", "/api/memories/import", await file.text(), "text/plain; charset=utf-8")).json();
    entry("note", `기억 가져오기: ${done.added} added, ${done.skipped} skipped`);
  } catch (err) {
    entry("error", err.message);
  }
  $("import-file").value = "";
  refreshMemories();
}

async function exportMemories() {
  try {
    const blob = await (await api("GET", "/api/memories/export")).blob();
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "ohlora_memory.txt";
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (err) {
    entry("error", err.message);
  }
}

async function resetSummary() {
  try {
    await api("POST", "/api/summary/reset");
    entry("note", "마지막 답변 요약을 지웠어요 (summary forgotten)");
  } catch (err) {
    entry("error", err.message);
  }
}

// ------------------------------------------------------------------ token
function askToken(reason) {
  const dialog = $("token-dialog");
  if (dialog.open) return;
  if (reason) $("token-reason").textContent = reason;
  $("token-input").value = state.token;
  dialog.showModal();
}

function onTokenClosed() {
  if ($("token-dialog").returnValue !== "save") return;
  state.token = $("token-input").value.trim();
  localStorage.setItem("ohlora.token", state.token);
  watchFace();
  refreshMemories();
}

// ------------------------------------------------------------------ start
function start() {
  const box = $("input");
  box.addEventListener("keydown", onKeyDown);
  box.addEventListener("compositionstart", () => { state.composing = true; });
  box.addEventListener("compositionend", onCompositionEnd);
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("open-memories").addEventListener("click", () => {
    const panel = $("memory-panel");
    panel.hidden = !panel.hidden;
    if (!panel.hidden) { $("faces-panel").hidden = true; refreshMemories(); }
  });
  $("open-faces").addEventListener("click", showFaces);
  $("random-face").addEventListener("click", () => chooseFace(null));
  $("add-memory").addEventListener("submit", addMemory);
  $("import-file").addEventListener("change", importMemories);
  $("export").addEventListener("click", exportMemories);
  $("reset-summary").addEventListener("click", resetSummary);
  $("open-token").addEventListener("click", () => askToken(""));
  $("token-dialog").addEventListener("close", onTokenClosed);
  watchFace();
  refreshMemories();
  box.focus();
}

start();
