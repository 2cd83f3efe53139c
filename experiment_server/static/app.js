// Participant flow: start or resume a session, show trials, post each response.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "psychinterp-session";
let state = { token: null, nTrials: 0, index: 0, shownAt: 0 };

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(payload.detail || response.statusText);
  return payload;
}

function show(id) {
  for (const el of document.querySelectorAll(".screen")) el.hidden = el.id !== id;
}

function preload(urls) {
  return Promise.all(urls.map((url) => {
    const img = new Image();
    img.src = url;
    return img.decode();
  }));
}

function fillReferences(figure, urls, label, kind) {
  figure.className = `refs ${kind}`;
  figure.querySelector("figcaption").textContent = label;
  const grid = figure.querySelector(".grid");
  grid.replaceChildren(...urls.map((url) => Object.assign(new Image(), { src: url, alt: "" })));
}

function setButtons(enabled) {
  for (const b of document.querySelectorAll(".answers button")) b.disabled = !enabled;
}

async function showTrial(index) {
  if (index >= state.nTrials) return finish();
  setButtons(false);
  const trial = await api("GET", `/api/sessions/${state.token}/trials/${index}`);
  const refs = trial.references;
  await preload([...refs.min, ...refs.max, ...trial.queries]);
  const [left, right] = trial.max_side === "right" ? [refs.min, refs.max] : [refs.max, refs.min];
  const leftKind = trial.max_side === "right" ? "min" : "max";
  const rightKind = leftKind === "min" ? "max" : "min";
  const caption = (kind, urls) => (urls.length ? (kind === "max" ? "Strongly activating" : "Weakly activating") : "");
  fillReferences($("refs-left"), left, caption(leftKind, left), leftKind);
  fillReferences($("refs-right"), right, caption(rightKind, right), rightKind);
  $("query-0").src = trial.queries[0];
  $("query-1").src = trial.queries[1];
  $("progress-bar").style.width = `${(100 * index) / state.nTrials}%`;
  state.index = index;
  show("trial");
  requestAnimationFrame(() => {
    state.shownAt = performance.now();
    setButtons(true);
  });
}

async function answer(chosenQuery, confidence) {
  setButtons(false);
  const body = {
    trial_index: state.index,
    chosen_query: chosenQuery,
    confidence,
    rt_ms: performance.now() - state.shownAt,
  };
  try {
    await api("POST", `/api/sessions/${state.token}/responses`, body);
    $("status").textContent = "";
    await showTrial(state.index + 1);
  } catch (err) {
    $("status").textContent = `Could not save your answer (${err.message}); please try again.`;
    setButtons(true);
  }
}

async function finish() {
  const result = await api("POST", `/api/sessions/${state.token}/complete`);
  $("completion-code").textContent = result.completion_code;
  localStorage.removeItem(TOKEN_KEY);
  show("done");
}

async function start() {
  $("start").disabled = true;
  try {
    const saved = localStorage.getItem(TOKEN_KEY);
    if (saved) {
      try {
        const s = await api("GET", `/api/sessions/${saved}`);
        state.token = saved;
        state.nTrials = s.n_trials;
        return s.next_trial === null ? finish() : showTrial(s.next_trial);
      } catch (err) {
        localStorage.removeItem(TOKEN_KEY);
      }
    }
    const session = await api("POST", "/api/sessions", { platform: "direct" });
    localStorage.setItem(TOKEN_KEY, session.token);
    state.token = session.token;
    state.nTrials = session.n_trials;
    await showTrial(0);
  } catch (err) {
    $("status").textContent = `Could not start: ${err.message}`;
    $("start").disabled = false;
  }
}

$("start").addEventListener("click", start);
for (const b of document.querySelectorAll(".answers button")) {
  b.addEventListener("click", () => answer(Number(b.dataset.query), Number(b.dataset.confidence)));
}
