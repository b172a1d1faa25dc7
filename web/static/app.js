// VoxCanvas playground: no build step, no CDN. Talks to the same API as any client: POST /api/jobs,
// then the job's Server-Sent Events (read with fetch so the API key can travel as a header).
"use strict";

const $ = (id) => document.getElementById(id);
const STAGE_LABELS = {
  queued: "Queued",
  waiting: "Waiting for a GPU worker",
  decode: "Decode audio",
  transcribe: "Whisper: transcribe",
  direct: "Director: expand the scene",
  render: "Stable Diffusion: render",
  review: "Critic: review",
  correct: "Correction round",
  music: "MusicGen: compose",
  warmup: "Load models",
  load: "Load the diffusion model",
};

let recorded = null; // a Blob from the microphone
let current = null; // the job shown
let imageUrl = null;
let musicUrl = null;
let gridUrl = null; // the candidates' grid (several candidates)

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).message || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

async function loadConfig() {
  const config = await (await fetch("/api/config")).json();
  for (const style of config.styles) {
    const option = document.createElement("option");
    option.value = option.textContent = style;
    $("style").append(option);
  }
  if (config.auth) {
    $("key-row").hidden = false;
    $("api-key").value = localStorage.getItem("voxcanvas-key") || "";
    $("api-key").addEventListener("change", () => localStorage.setItem("voxcanvas-key", $("api-key").value.trim()));
  }
}

// --- recording -----------------------------------------------------------------------------------
let recorder = null;
async function toggleRecording() {
  if (recorder && recorder.state === "recording") { recorder.stop(); return; }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    $("form-error").textContent = "This browser can't record here (it needs https or localhost); pick a file instead.";
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((t) => t.stop());
      recorded = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
      $("record").classList.remove("recording");
      $("record").textContent = "🎙️ Record again";
      $("audio-status").textContent = `recorded ${(recorded.size / 1024).toFixed(0)} KB`;
      $("audio-file").value = "";
    };
    recorder.start();
    $("record").classList.add("recording");
    $("record").textContent = "⏹ Stop";
    $("audio-status").textContent = "recording…";
  } catch (err) {
    $("form-error").textContent = `Microphone unavailable: ${err.message}`;
  }
}

// --- running a job -------------------------------------------------------------------------------
async function run(event) {
  event.preventDefault();
  $("form-error").textContent = "";
  const form = new FormData();
  const file = $("audio-file").files[0];
  if (file) form.append("audio", file, file.name);
  else if (recorded) form.append("audio", recorded, recorded.type.includes("ogg") ? "note.ogg" : "note.webm");
  const text = $("idea-text").value.trim();
  if (text) form.append("text", text);
  if ($("style").value) form.append("style", $("style").value);
  if ($("count").value) form.append("count", $("count").value);
  if (!form.has("audio") && !text) { $("form-error").textContent = "Record or pick a voice note, or type an idea."; return; }
  await start(() => api("/api/jobs", { method: "POST", body: form }));
}

async function start(request) {
  setBusy(true);
  try {
    const job = await (await request()).json();
    await follow(job);
  } catch (err) {
    $("form-error").textContent = err.message;
  } finally {
    setBusy(false);
  }
}

function setBusy(busy) {
  for (const id of ["run", "regenerate", "vary", "soundtrack"]) $(id).disabled = busy;
}

// A small Server-Sent Events reader over fetch (EventSource can't send an Authorization header).
async function* sse(url) {
  const response = await api(url, { headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { name, data: JSON.parse(data.join("\n")) };
    }
  }
}

function traceRow(label, cls = "") {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  li.innerHTML = `<span class="label"></span><span class="time"></span>`;
  li.querySelector(".label").textContent = label;
  $("trace").append(li);
  return li;
}

async function follow(job) {
  $("trace").replaceChildren();
  $("trace-card").hidden = false;
  $("job-id").textContent = job.job_id;
  let open = null; // the row of the stage in progress: { li, key, t0 }
  const close = (t) => { if (open) open.li.querySelector(".time").textContent = `${(t - open.t0).toFixed(2)} s`; };
  for await (const event of sse(job.events_url)) {
    const d = event.data;
    if (event.name === "queued") {
      const where = d.position ? `position ${d.position}${d.eta_s != null ? `, ~${Math.round(d.eta_s)} s` : ""}` : "";
      if (open && open.key === "queued") { open.li.querySelector(".label").textContent = `Queued ${where}`; continue; }
      close(d.t); open = { li: traceRow(`Queued ${where}`), key: "queued", t0: d.t };
    } else if (event.name === "stage") {
      const key = `${d.stage}:${d.round}`;
      let label = STAGE_LABELS[d.stage] || d.stage;
      if (d.round && d.stage !== "correct") label += ` (round ${d.round + 1})`;
      if (d.total && (d.stage === "render" || d.stage === "music")) label += ` ${d.step}/${d.total}`;
      if (d.detail) label += ` (${d.detail})`;
      if (open && open.key === key) { open.li.querySelector(".label").textContent = label; continue; }
      close(d.t); open = { li: traceRow(label), key, t0: d.t };
    } else if (event.name === "done") {
      close(d.t); open = null;
      traceRow(`Done in ${d.t.toFixed(2)} s`, "done");
      if (d.media === "music") await showMusic(d.result, d);
      else await show(d.result, d);
    } else if (event.name === "failed") {
      close(d.t); open = null;
      traceRow(d.message, "failed");
      $("form-error").textContent = d.message;
    }
  }
}

// A piece of music (a picture's soundtrack, or music asked for): a player under the picture.
async function showMusic(result, links) {
  const blob = await (await api(links.music_url)).blob();
  if (musicUrl) URL.revokeObjectURL(musicUrl);
  musicUrl = URL.createObjectURL(blob);
  $("result-card").hidden = false;
  if (!result.parent_job_id) { // music on its own (a voice note that asked for music): no picture to show
    $("title").textContent = `🎵 ${result.idea}`;
    $("transcript-row").hidden = !result.transcript;
    $("transcript").textContent = result.transcript || "";
    $("result-card").classList.add("music-only"); // hides the picture, its score and its buttons
    current = null;
  }
  $("music-row").hidden = false;
  $("music-prompt").textContent = `${result.music_prompt} · ${result.duration_s.toFixed(1)} s`;
  $("music-tags").textContent = result.tags.length ? `Tags: ${result.tags.join(", ")}` : "";
  $("soundtrack-player").src = musicUrl;
}

async function show(result, links) {
  current = result.job_id;
  $("result-card").classList.remove("music-only");
  $("music-row").hidden = true;
  $("soundtrack-player").removeAttribute("src");
  const best = result.rounds[result.best_round];
  $("result-card").hidden = false;
  $("title").textContent = result.scene.title;
  $("transcript-row").hidden = !result.transcript;
  $("transcript").textContent = result.transcript || "";
  $("score").textContent = best.score != null ? `${best.score}/100` : "–";
  $("threshold").textContent = ` (threshold ${result.threshold}; ${result.rounds.length} round${result.rounds.length > 1 ? "s" : ""})`;
  $("palette").replaceChildren(...result.palette.map((hex) => {
    const sw = document.createElement("div");
    sw.className = "swatch";
    sw.innerHTML = `<div></div><span></span>`;
    sw.firstChild.style.background = hex;
    sw.lastChild.textContent = hex;
    return sw;
  }));
  const first = result.rounds[0];
  $("missing-row").hidden = !first.missing_elements.length;
  $("missing").textContent = first.missing_elements.join(", ");
  const correction = first.correction_prompt || (result.rounds[1] && result.rounds[1].prompt);
  $("correction-row").hidden = !correction;
  $("correction").textContent = correction || "";
  $("notes").textContent = best.critic_notes || "";
  $("prompt").textContent = best.prompt;
  await showCandidates(result, links);
  const blob = await (await api(links.image_url)).blob();
  if (imageUrl) URL.revokeObjectURL(imageUrl);
  imageUrl = URL.createObjectURL(blob);
  $("result-image").src = imageUrl;
  $("download").href = imageUrl;
  $("download").download = `voxcanvas-${result.job_id}.png`;
}

// Several candidates: each one's score (★ the best, ✎ a corrected cell) and the labelled grid.
async function showCandidates(result, links) {
  const cells = result.candidates || [];
  $("candidates-row").hidden = cells.length < 2;
  if (gridUrl) { URL.revokeObjectURL(gridUrl); gridUrl = null; }
  $("grid-image").removeAttribute("src");
  if (cells.length < 2) { $("candidates").replaceChildren(); return; }
  $("candidates").replaceChildren(...cells.map((cell) => {
    const li = document.createElement("li");
    const best = cell.index === result.best_candidate;
    li.className = best ? "best" : "";
    li.textContent = `${cell.score != null ? cell.score : "–"}/100${best ? " ★" : ""}${cell.corrected ? " ✎" : ""}`;
    return li;
  }));
  if (links.grid_url) {
    gridUrl = URL.createObjectURL(await (await api(links.grid_url)).blob());
    $("grid-image").src = gridUrl;
  }
}

$("idea-form").addEventListener("submit", run);
$("record").addEventListener("click", toggleRecording);
$("audio-file").addEventListener("change", () => {
  recorded = null;
  const f = $("audio-file").files[0];
  $("audio-status").textContent = f ? `${f.name}, ${(f.size / 1024).toFixed(0)} KB` : "";
});
$("regenerate").addEventListener("click", () => current && start(() => api(`/api/jobs/${current}/regenerate`, { method: "POST" })));
$("soundtrack").addEventListener("click", () => current && start(() => api(`/api/jobs/${current}/soundtrack`, { method: "POST" })));
$("vary").addEventListener("click", () => current && start(() => api(`/api/jobs/${current}/vary`, { method: "POST" })));
loadConfig().catch((err) => { $("form-error").textContent = `Can't reach the server: ${err.message}`; });
