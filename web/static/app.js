// The registry's pages: copy buttons, the upload and run forms, live run progress over SSE,
// and the mask overlay controls. Plain JavaScript, no build step.
"use strict";

// The server's JSON error ({"error": {"code", "message"}}) as one sentence.
async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) {
      if (body.error.code === "unauthorized") {
        return body.error.message + " Log in first (top right).";
      }
      return body.error.message;
    }
  } catch (_) { /* not JSON */ }
  return response.status + " " + response.statusText;
}

function say(form, text, good) {
  const status = form.querySelector(".status");
  if (!status) return;
  status.textContent = text;
  status.className = "status " + (good ? "good" : "bad");
}

function setupCopyButtons() {
  for (const button of document.querySelectorAll("button.copy")) {
    button.addEventListener("click", async () => {
      const from = button.dataset.copyFrom;
      const text = from ? document.getElementById(from).textContent : button.dataset.copy;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "Copied";
      } catch (_) {
        button.textContent = "Select and copy";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 1500);
    });
  }
}

function setupUpload() {
  const form = document.getElementById("upload");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = form.querySelector("input[type=file]").files[0];
    const name = form.querySelector("input[name=name]").value;
    if (!file) { say(form, "Choose an archive first.", false); return; }
    say(form, "Uploading " + file.name + "…", true);
    const response = await fetch(form.dataset.endpoint + "?name=" + encodeURIComponent(name), {
      method: "POST", body: file, headers: { "content-type": "application/octet-stream" },
    });
    if (!response.ok) { say(form, "Upload refused: " + await errorText(response), false); return; }
    const dataset = await response.json();
    say(form, (response.status === 201 ? "Stored " : "Already stored: ") + dataset.digest, true);
    window.location.href = "/datasets/" + dataset.digest;
  });
}

function setupRunForm() {
  const form = document.getElementById("run-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = (name) => form.elements[name].value;
    const net = value("student") === "cbr" ? { type: "cbr" } : { type: "mlp", hidden: [128] };
    const evalSteps = Number(value("eval_steps"));
    const config = {};
    if (value("validation_split")) config.validation_split = value("validation_split");
    const body = {
      dataset: form.dataset.dataset,
      kind: value("kind"),
      config: {
        ...config,
        meta_steps: Number(value("meta_steps")),
        inner_steps: Number(value("inner_steps")),
        batch_size: Number(value("batch_size")),
        inner_lr: Number(value("inner_lr")),
        outer_lr: Number(value("outer_lr")),
        student: net,
      },
      evaluation: evalSteps > 0 ? { steps: evalSteps } : { seeds: [] },
    };
    if (value("algorithm")) body.algorithm = value("algorithm");
    say(form, "Starting…", true);
    const response = await fetch("/v1/runs", {
      method: "POST", body: JSON.stringify(body), headers: { "content-type": "application/json" },
    });
    if (!response.ok) { say(form, "Not started: " + await errorText(response), false); return; }
    const run = await response.json();
    window.location.href = "/runs/" + run.id;
  });
}

function setupRun() {
  const root = document.getElementById("run");
  if (!root) return;
  const id = root.dataset.run;
  const state = document.getElementById("run-state");
  const progress = document.getElementById("run-progress");
  const log = document.getElementById("run-log");
  const chart = document.getElementById("loss-chart");
  let chartPending = false;
  const refreshChart = async () => {
    if (chartPending) return;
    chartPending = true;
    try {
      const response = await fetch("/runs/" + id + "/chart.svg");
      if (response.ok) chart.innerHTML = await response.text();
    } finally { chartPending = false; }
  };
  const line = (text) => {
    const item = document.createElement("li");
    item.textContent = text;
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
  };
  const source = new EventSource("/v1/runs/" + id + "/events");
  source.addEventListener("state", (e) => {
    const event = JSON.parse(e.data);
    state.textContent = event.state;
    state.className = "state state-" + event.state;
    root.dataset.state = event.state;
    line(event.state + (event.message ? ": " + event.message : ""));
    if (["succeeded", "failed", "cancelled"].includes(event.state) && root.dataset.initial !== event.state) {
      source.close();
      // The finished page shows the result link or the failure text.
      setTimeout(() => window.location.reload(), 300);
    }
  });
  source.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    const loss = p.val_loss == null ? "" : ", validation loss " + p.val_loss.toFixed(4);
    progress.textContent = p.phase + " " + p.step + " / " + p.total + loss;
    root.dataset.events = String(Number(root.dataset.events || 0) + 1);
    if (p.phase === "learning") refreshChart();
  });
  source.addEventListener("log", (e) => line(JSON.parse(e.data).message));
  source.onerror = () => { if (["succeeded", "failed", "cancelled"].includes(root.dataset.state)) source.close(); };
  root.dataset.initial = root.dataset.state;
  const cancel = document.getElementById("cancel");
  if (cancel) {
    cancel.addEventListener("click", async () => {
      const response = await fetch("/v1/runs/" + id + "/cancel", { method: "POST" });
      if (!response.ok) say(root, "Not cancelled: " + await errorText(response), false);
    });
  }
}

function setupMasks() {
  const toggle = document.getElementById("show-masks");
  const opacity = document.getElementById("mask-opacity");
  const grid = document.getElementById("mask-grid");
  if (!toggle || !grid) return;
  toggle.addEventListener("change", () => grid.classList.toggle("masks-hidden", !toggle.checked));
  opacity.addEventListener("input", () => grid.style.setProperty("--mask-opacity", opacity.value / 100));
}

document.addEventListener("DOMContentLoaded", () => {
  setupCopyButtons();
  setupUpload();
  setupRunForm();
  setupRun();
  setupMasks();
});
