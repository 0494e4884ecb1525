// The page served at `GET /`: one self-contained document (no external resources, no framework).
// It posts to /v1/generate?stream=true, shows the text as the tokens arrive, and draws boxes and
// masks over the image.
let webPageHTML = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PaliGemma</title>
<style>
  :root { --fg: #1b1f24; --muted: #57606a; --line: #d0d7de; --accent: #0b5cad; --bg: #fff; --panel: #f6f8fa; --err: #b3261e; }
  @media (prefers-color-scheme: dark) {
    :root { --fg: #e6edf3; --muted: #9da7b3; --line: #3d444d; --accent: #6cb6ff; --bg: #0d1117; --panel: #161b22; --err: #ff7b72; }
  }
  * { box-sizing: border-box; }
  body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
  header { padding: .75rem 1.25rem; border-bottom: 1px solid var(--line); display: flex; gap: 1rem; align-items: baseline; flex-wrap: wrap; }
  header h1 { font-size: 1.25rem; margin: 0; }
  #health { color: var(--muted); font-size: .9rem; }
  main { display: grid; grid-template-columns: minmax(280px, 380px) 1fr; gap: 1.25rem; padding: 1.25rem; }
  @media (max-width: 800px) { main { grid-template-columns: 1fr; } }
  form { display: flex; flex-direction: column; gap: .8rem; }
  fieldset { border: 1px solid var(--line); border-radius: 8px; padding: .75rem; margin: 0; display: flex; flex-direction: column; gap: .6rem; min-inline-size: 0; }
  legend { font-weight: 600; padding: 0 .25rem; }
  label { display: flex; flex-direction: column; gap: .2rem; font-size: .95rem; }
  input, select, textarea, button { font: inherit; color: inherit; }
  input[type=text], input[type=number], select, textarea { padding: .4rem .5rem; border: 1px solid var(--line); border-radius: 6px; background: var(--bg); }
  .row { display: flex; gap: .6rem; } .row > label { flex: 1; }
  #drop { border: 2px dashed var(--line); border-radius: 8px; padding: 1rem; text-align: center; color: var(--muted); cursor: pointer; }
  #drop.over { border-color: var(--accent); color: var(--accent); }
  #drop input { max-width: 100%; margin-top: .4rem; }
  #drop:focus-within { outline: 2px solid var(--accent); outline-offset: 2px; }
  .visually-hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
  button { padding: .5rem 1rem; border-radius: 6px; border: 1px solid var(--accent); background: var(--accent); color: #fff; cursor: pointer; }
  button.secondary { background: transparent; color: var(--accent); }
  button:disabled { opacity: .5; cursor: not-allowed; }
  :focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
  #prompt-preview { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85rem; color: var(--muted); word-break: break-all; }
  .panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: .75rem; }
  #output { white-space: pre-wrap; word-break: break-word; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; min-height: 3rem; margin: 0; }
  #status { color: var(--muted); min-height: 1.5rem; }
  #status.error { color: var(--err); font-weight: 600; }
  #stage { position: relative; max-width: 100%; }
  canvas { max-width: 100%; height: auto; display: block; border-radius: 6px; border: 1px solid var(--line); }
  #objects { margin: .5rem 0 0; padding-left: 1.25rem; }
  #objects .swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px; margin-right: .35em; vertical-align: -.05em; }
  table { border-collapse: collapse; font-size: .9rem; } td, th { padding: .15rem .6rem .15rem 0; text-align: left; } td { font-variant-numeric: tabular-nums; }
  section h2 { font-size: 1rem; margin: 0 0 .4rem; }
  .results { display: flex; flex-direction: column; gap: 1rem; min-width: 0; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header>
  <h1>PaliGemma</h1>
  <span id="health" aria-live="polite">checking the server…</span>
</header>
<main>
  <form id="form" novalidate>
    <fieldset>
      <legend>Image</legend>
      <div id="drop">
        <label for="file">Choose an image (JPEG, PNG or WebP) or drop one here</label>
        <input id="file" name="image" type="file" accept="image/jpeg,image/png,image/webp" required>
      </div>
    </fieldset>
    <fieldset>
      <legend>Task</legend>
      <label for="task">Task
        <select id="task" name="task">
          <option value="caption">Caption</option>
          <option value="describe">Describe</option>
          <option value="answer">Answer a question</option>
          <option value="detect">Detect objects</option>
          <option value="segment">Segment an object</option>
          <option value="ocr">Read text (OCR)</option>
          <option value="free">Free prompt</option>
        </select>
      </label>
      <label for="question" data-for="answer">Question
        <input id="question" name="question" type="text" value="what is in the image?">
      </label>
      <label for="objects-input" data-for="detect">Objects (separate with ;)
        <input id="objects-input" name="objects" type="text" value="cat ; dog">
      </label>
      <label for="object" data-for="segment">Object
        <input id="object" name="object" type="text" value="cat">
      </label>
      <label for="free" data-for="free">Prompt
        <textarea id="free" name="prompt" rows="2">caption en</textarea>
      </label>
      <label for="lang" data-for="caption describe answer">Language
        <input id="lang" name="lang" type="text" value="en" list="langs" autocomplete="off">
        <datalist id="langs">
          <option value="en"><option value="de"><option value="fr"><option value="es"><option value="it"><option value="pt">
          <option value="nl"><option value="pl"><option value="ru"><option value="ja"><option value="ko"><option value="zh">
        </datalist>
      </label>
      <div id="prompt-preview" aria-live="polite"></div>
    </fieldset>
    <fieldset>
      <legend>Generation</legend>
      <div class="row">
        <label for="max-tokens">Max tokens
          <input id="max-tokens" name="max_new_tokens" type="number" min="1" max="1024" step="1" value="64">
        </label>
        <label for="temperature">Temperature
          <input id="temperature" name="temperature" type="number" min="0" max="5" step="0.1" value="0">
        </label>
      </div>
    </fieldset>
    <div class="row">
      <button id="run" type="submit">Generate</button>
      <button id="stop" type="button" class="secondary" disabled>Stop</button>
    </div>
  </form>
  <div class="results">
    <div id="status" role="status" aria-live="polite"></div>
    <section class="panel" aria-labelledby="output-title">
      <h2 id="output-title">Output</h2>
      <pre id="output" aria-live="polite" aria-busy="false"></pre>
    </section>
    <section aria-labelledby="image-title">
      <h2 id="image-title">Image</h2>
      <div id="stage"><canvas id="canvas" width="640" height="360" role="img" aria-label="No image chosen yet"></canvas></div>
      <ol id="objects" aria-label="Detected objects"></ol>
    </section>
    <section class="panel" aria-labelledby="timings-title">
      <h2 id="timings-title">Timings</h2>
      <table><tbody id="timings"><tr><td>—</td></tr></tbody></table>
    </section>
  </div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const form = $("form"), fileInput = $("file"), drop = $("drop"), taskSel = $("task");
const output = $("output"), statusEl = $("status"), canvas = $("canvas"), ctx = canvas.getContext("2d");
const colors = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990"];
let image = null, imageFile = null, controller = null, lastResult = null;

fetch("/health").then((r) => r.json()).then((h) => {
  $("health").textContent = `model ${h.model} · ${h.image_size}×${h.image_size} px · ${h.image_tokens} image tokens` +
    (h.segmentation ? " · masks on" : " · masks off");
}).catch(() => { $("health").textContent = "server not reachable"; });

function buildPrompt() {
  const lang = $("lang").value.trim() || "en";
  switch (taskSel.value) {
    case "caption": return `caption ${lang}`;
    case "describe": return `describe ${lang}`;
    case "answer": return `answer ${lang} ${$("question").value.trim()}`;
    case "detect": return "detect " + $("objects-input").value.split(";").map((s) => s.trim()).filter(Boolean).join(" ; ");
    case "segment": return `segment ${$("object").value.trim()}`;
    case "ocr": return "ocr";
    default: return $("free").value;
  }
}
function updateTask() {
  for (const el of document.querySelectorAll("[data-for]")) {
    el.hidden = !el.dataset.for.split(" ").includes(taskSel.value);
  }
  $("prompt-preview").textContent = "Prompt: " + buildPrompt();
}
form.addEventListener("input", updateTask);
taskSel.addEventListener("change", updateTask);
updateTask();

function setStatus(text, isError) {
  statusEl.textContent = text;
  statusEl.classList.toggle("error", !!isError);
}

function useFile(file) {
  if (!file) return;
  if (!/^image\/(jpeg|png|webp)$/.test(file.type) && file.type) {
    setStatus(`${file.name}: ${file.type} is not supported; use JPEG, PNG or WebP.`, true);
  }
  imageFile = file;
  lastResult = null;
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    image = img;
    canvas.setAttribute("aria-label", `${file.name}, ${img.naturalWidth}×${img.naturalHeight} pixels`);
    draw();
    URL.revokeObjectURL(url);
  };
  img.onerror = () => { image = null; setStatus(`${file.name}: the browser cannot show this image (the server may still read it).`, false); };
  img.src = url;
}
fileInput.addEventListener("change", () => useFile(fileInput.files[0]));
drop.addEventListener("click", (e) => { if (e.target === drop) fileInput.click(); });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const f = e.dataTransfer.files[0];
  if (f) {
    try { const dt = new DataTransfer(); dt.items.add(f); fileInput.files = dt.files; } catch (_) {}
    useFile(f);
  }
});

// COCO RLE (column-major, alternating runs starting with zeros) → RGBA overlay.
function maskImageData(rle, width, height, color) {
  const data = new ImageData(width, height);
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  let pos = 0, value = 0;
  for (const run of rle.counts) {
    if (value) {
      for (let k = pos; k < pos + run; k++) {
        const x = Math.floor(k / height), y = k % height, o = (y * width + x) * 4;
        data.data[o] = r; data.data[o + 1] = g; data.data[o + 2] = b; data.data[o + 3] = 110;
      }
    }
    pos += run;
    value ^= 1;
  }
  return data;
}

function draw() {
  if (!image) return;
  canvas.width = image.naturalWidth;
  canvas.height = image.naturalHeight;
  ctx.drawImage(image, 0, 0);
  const list = $("objects");
  list.replaceChildren();
  if (!lastResult) return;
  const sx = canvas.width / lastResult.width, sy = canvas.height / lastResult.height;
  (lastResult.masks || []).forEach((m, i) => {
    const overlay = document.createElement("canvas");
    overlay.width = m.width; overlay.height = m.height;
    overlay.getContext("2d").putImageData(maskImageData(m.rle, m.width, m.height, colors[i % colors.length]), 0, 0);
    ctx.drawImage(overlay, 0, 0, canvas.width, canvas.height);
  });
  const line = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 300));
  ctx.font = `${Math.max(12, line * 7)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  (lastResult.objects || []).forEach((o, i) => {
    const c = colors[i % colors.length];
    const x = o.x0 * sx, y = o.y0 * sy, w = (o.x1 - o.x0) * sx, h = (o.y1 - o.y0) * sy;
    ctx.strokeStyle = c; ctx.lineWidth = line;
    ctx.strokeRect(x, y, w, h);
    const label = o.label || "(no label)";
    const tw = ctx.measureText(label).width + line * 4, th = line * 7 + line * 2;
    ctx.fillStyle = c;
    ctx.fillRect(x, Math.max(0, y - th), tw, th);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x + line * 2, Math.max(0, y - th) + line);
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = c; sw.setAttribute("aria-hidden", "true");
    li.append(sw, `${label}: x ${o.x0.toFixed(0)}–${o.x1.toFixed(0)}, y ${o.y0.toFixed(0)}–${o.y1.toFixed(0)}`);
    list.append(li);
  });
  canvas.setAttribute("aria-label", `${imageFile ? imageFile.name : "image"} with ${(lastResult.objects || []).length} boxes`);
}

function showTimings(t) {
  const rows = [
    ["Queue", t.queue_seconds, "s"], ["Image encoder", t.image_seconds, "s"], ["Prefill", t.prefill_seconds, "s"],
    ["Decode", t.decode_seconds, "s"], ["Total", t.total_seconds, "s"], ["Prompt tokens", t.prompt_tokens, ""],
    ["Generated tokens", t.generated_tokens, ""], ["Decode speed", t.decode_tokens_per_second, "tok/s"],
  ];
  const body = $("timings");
  body.replaceChildren();
  for (const [name, value, unit] of rows) {
    if (value === undefined) continue;
    const tr = document.createElement("tr"), th = document.createElement("th"), td = document.createElement("td");
    th.scope = "row"; th.textContent = name;
    td.textContent = unit === "s" ? `${Number(value).toFixed(3)} s` : unit ? `${Number(value).toFixed(1)} ${unit}` : String(value);
    tr.append(th, td);
    body.append(tr);
  }
}

function fileToBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function setRunning(on) {
  $("run").disabled = on;
  $("stop").disabled = !on;
  output.setAttribute("aria-busy", on ? "true" : "false");
}

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!imageFile) { setStatus("Choose an image first.", true); fileInput.focus(); return; }
  const maxTokens = parseInt($("max-tokens").value, 10), temperature = parseFloat($("temperature").value);
  if (!(maxTokens >= 1)) { setStatus("Max tokens must be at least 1.", true); $("max-tokens").focus(); return; }
  if (!(temperature >= 0)) { setStatus("Temperature must be 0 or more.", true); $("temperature").focus(); return; }
  const prompt = buildPrompt();
  output.textContent = "";
  lastResult = null;
  draw();
  setRunning(true);
  setStatus("Sending the image…");
  controller = new AbortController();
  const started = performance.now();
  let tokens = 0;
  try {
    const body = JSON.stringify({ image: await fileToBase64(imageFile), prompt, max_new_tokens: maxTokens, temperature,
                                  top_k: 0, top_p: 1, seed: 0 });
    const response = await fetch("/v1/generate?stream=true", {
      method: "POST", headers: { "Content-Type": "application/json" }, body, signal: controller.signal,
    });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { const j = await response.json(); message = `${j.error.message} (${response.status} ${j.error.code})`; } catch (_) {}
      throw new Error(message);
    }
    setStatus("Generating…");
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "", finished = false;
    while (!finished) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (!data) continue;
        const payload = JSON.parse(data);
        if (event === "token") {
          output.textContent += payload.text;
          if (payload.id !== null) tokens++;
          setStatus(`Generating… ${tokens} tokens, ${((performance.now() - started) / 1000).toFixed(1)} s`);
        } else if (event === "done") {
          lastResult = payload;
          output.textContent = payload.text;
          showTimings(payload.timings);
          draw();
          const n = (payload.objects || []).length;
          setStatus(`Done: ${payload.timings.generated_tokens} tokens (${payload.finish_reason})` +
                    (payload.objects ? `, ${n} object${n === 1 ? "" : "s"}` : "") + ".");
          finished = true;
        } else if (event === "error") {
          throw new Error(`${payload.error.message} (${payload.error.code})`);
        }
      }
    }
    if (!finished) setStatus("The connection ended before the result.", true);
  } catch (err) {
    if (err.name === "AbortError") setStatus("Stopped.");
    else setStatus("Error: " + err.message, true);
  } finally {
    setRunning(false);
    controller = null;
  }
});
$("stop").addEventListener("click", () => { if (controller) controller.abort(); });
</script>
</body>
</html>
"""#
