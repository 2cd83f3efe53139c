// Participant flow: landing, consent, instructions, full screen, practice, main trials, feedback, completion.
// Responses are queued in localStorage and retried until the server acknowledges them.
"use strict";

const $ = (id) => document.getElementById(id);
const SETTINGS = JSON.parse($("settings").textContent);
const TOKEN_KEY = "psychinterp-session";
const DECLINED_KEY = "psychinterp-declined";
const MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE";

const state = {
  token: null,
  notice: "", // a line that stays on every screen until its cause is gone (an answer waiting to be sent)
  session: null,
  index: 0,
  shownAt: 0,
  locked: true,
  focusLost: 0,
  onAnswer: null,
  events: [],
  inTrials: false,
  chosen: null, // grid layout: the query chosen before its confidence
  wrongFeedback: "",
  layout: "pair",
};

// --- HTTP ------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, detail, payload = {}) {
    super(detail);
    this.status = status;
    this.payload = payload;
  }
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const payload = await response.json().catch(() => ({}));
  if (!response.ok) throw new HttpError(response.status, payload.detail || response.statusText, payload);
  return payload;
}

// --- platform parameters ------------------------------------------------------------

function platformParams() {
  const q = new URLSearchParams(location.search);
  if (q.get("PROLIFIC_PID")) {
    return {
      platform: "prolific",
      participant_id: q.get("PROLIFIC_PID"),
      platform_study_id: q.get("STUDY_ID"),
      platform_session_id: q.get("SESSION_ID"),
    };
  }
  if (q.get("assignmentId")) {
    return {
      platform: "mturk",
      participant_id: q.get("workerId"),
      assignment_id: q.get("assignmentId"),
      hit_id: q.get("hitId"),
      turk_submit_to: q.get("turkSubmitTo"),
    };
  }
  return { platform: "direct" };
}

function withoutEmpty(object) {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== null && v !== undefined && v !== ""));
}

// --- screens ----------------------------------------------------------------------

function show(id) {
  for (const el of document.querySelectorAll(".screen")) el.hidden = el.id !== id;
  $("status").textContent = state.notice;
}

function stop(message) {
  state.inTrials = false;
  $("stopped-text").textContent = message;
  show("stopped");
}

function isMobile() {
  const mobileAgent = /Mobi|Android|iPhone|iPad|iPod|Silk|Kindle/i.test(navigator.userAgent);
  const touchOnly = matchMedia("(pointer: coarse)").matches && !matchMedia("(any-pointer: fine)").matches;
  return mobileAgent || touchOnly;
}

for (const el of document.querySelectorAll(".min-size")) el.textContent = `${SETTINGS.minWidth} × ${SETTINGS.minHeight}`;

// --- response outbox: localStorage, retried with backoff, flushed on page hide ---------------

function outboxKey() {
  return `psychinterp-outbox-${state.token}`;
}

function outbox() {
  return JSON.parse(localStorage.getItem(outboxKey()) || "[]");
}

function saveOutbox(items) {
  localStorage.setItem(outboxKey(), JSON.stringify(items));
}

let flushing = null;
let backoffMs = 500;

async function drainOutbox() {
  for (;;) {
    const pending = outbox();
    if (!pending.length) return;
    const item = pending[0];
    try {
      await api("POST", `/api/sessions/${state.token}/responses`, item);
    } catch (err) {
      if (err instanceof HttpError && (err.status === 409 || err.status === 410)) {
        // The session is over (expired, completed, failed): the server will never take this one.
        saveOutbox(outbox().filter((r) => r.trial_index !== item.trial_index));
        throw err;
      }
      if (err instanceof HttpError && err.status === 425) {
        // Answered sooner than the study takes an answer after its trial appeared: say so, wait, send again.
        state.notice = "Please take a little more time to look at each trial. Your answer is kept and sent in a moment.";
        $("status").textContent = state.notice;
        await new Promise((resolve) => setTimeout(resolve, 1000 * (err.payload.retry_after_s ?? 1) + 100));
        continue;
      }
      if (err instanceof HttpError && err.status >= 400 && err.status < 500 && err.status !== 429) {
        // Refused for what it is: keep it (nothing is dropped unseen) and stop with the server's reason.
        $("status").textContent = `Your answer could not be stored (${err.message}). Please reload the page.`;
        throw err;
      }
      $("status").textContent = "Connection problem: your answers are kept and will be sent when it returns.";
      await new Promise((resolve) => setTimeout(resolve, backoffMs));
      backoffMs = Math.min(30000, backoffMs * 2);
      continue;
    }
    backoffMs = 500;
    state.notice = "";
    $("status").textContent = "";
    saveOutbox(outbox().filter((r) => r.trial_index !== item.trial_index));
  }
}

// One drain at a time; callers share it. (`.finally` runs after the assignment, even when the drain ends at once.)
function flushOutbox() {
  if (!flushing) flushing = drainOutbox().finally(() => { flushing = null; });
  return flushing;
}

function beaconFlush() {
  if (!state.token) return;
  const pending = outbox();
  if (pending.length) {
    navigator.sendBeacon(`/api/sessions/${state.token}/responses/batch`, JSON.stringify({ responses: pending }));
  }
  flushEvents(true);
}

// --- window events -------------------------------------------------------------------

function recordEvent(kind, detail) {
  if (!state.token) return;
  state.events.push(withoutEmpty({ kind, client_ms: performance.now(), detail }));
}

function flushEvents(useBeacon = false) {
  if (!state.token || !state.events.length) return;
  const body = JSON.stringify({ events: state.events.splice(0, 200) });
  const url = `/api/sessions/${state.token}/events`;
  if (useBeacon) navigator.sendBeacon(url, body);
  else fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body }).catch(() => {});
}

window.addEventListener("blur", () => {
  recordEvent("blur");
  if (state.inTrials) state.focusLost += 1;
});
window.addEventListener("focus", () => recordEvent("focus"));
let resizeTimer = null;
window.addEventListener("resize", () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => recordEvent("resize", `${innerWidth}x${innerHeight}`), 300);
});
document.addEventListener("visibilitychange", () => {
  recordEvent(document.hidden ? "visibility_hidden" : "visibility_visible");
  if (document.hidden) beaconFlush();
});
document.addEventListener("fullscreenchange", () => {
  const full = Boolean(document.fullscreenElement);
  recordEvent(full ? "fullscreen_enter" : "fullscreen_exit");
  $("fullscreen-nag").hidden = full || !state.inTrials;
});
window.addEventListener("pagehide", beaconFlush);
setInterval(() => flushEvents(), 5000);

async function enterFullscreen() {
  if (document.fullscreenElement || !document.documentElement.requestFullscreen) return;
  try {
    await document.documentElement.requestFullscreen();
  } catch (err) {
    recordEvent("fullscreen_exit", "full screen refused by the browser");
  }
}

$("fullscreen-again").addEventListener("click", enterFullscreen);

// --- trials --------------------------------------------------------------------------

function decoded(urls) {
  return Promise.all(
    urls.map(async (url) => {
      const img = new Image();
      img.src = url;
      img.alt = "";
      await img.decode();
      return img;
    }),
  );
}

function caption(kind, count) {
  if (!count) return "";
  return kind === "max" ? "Strongly activating" : "Weakly activating";
}

function placeReferences(prefix, trial, images) {
  const maxRight = trial.max_side === "right";
  const sides = maxRight ? [["min", images.min], ["max", images.max]] : [["max", images.max], ["min", images.min]];
  for (const [position, [kind, imgs]] of [["left", sides[0]], ["right", sides[1]]]) {
    const box = $(`${prefix}-${position}`);
    box.className = `refs ${kind}`;
    box.querySelector(".caption").textContent = caption(kind, imgs.length);
    box.querySelector(".grid").replaceChildren(...imgs);
  }
}

async function loadTrial(path) {
  const trial = await api("GET", path);
  const [min, max, queries] = await Promise.all([
    decoded(trial.references.min),
    decoded(trial.references.max),
    decoded(trial.queries),
  ]);
  return { trial, images: { min, max, queries } };
}

function setButtons(enabled) {
  state.locked = !enabled;
  for (const b of document.querySelectorAll("#trial .answers button, #trial .choice")) b.disabled = !enabled;
  if (enabled) chooseQuery(state.chosen);
}

// Grid layout: a query is chosen first (its image, or its number key); the confidence buttons then answer.
function chooseQuery(query) {
  state.chosen = query;
  for (const choice of document.querySelectorAll("#trial .choice")) {
    choice.setAttribute("aria-pressed", String(Number(choice.dataset.query) === query));
  }
  for (const b of document.querySelectorAll("#trial .answers button[data-confidence]")) {
    if (b.dataset.query === undefined) b.disabled = state.locked || query === null;
  }
}

// The answer buttons come with each trial (its paradigm's): one per query and confidence, with a key;
// in the grid layout, one per confidence (the queries themselves are the choices).
function renderAnswers(answers, layout = "pair") {
  const group = document.querySelector("#trial .answers");
  const built = JSON.stringify([layout, answers]);
  if (group.dataset.built === built) return;
  if (layout === "grid") {
    const ratings = answers.filter((a) => a.query === undefined).map((a) => {
      const button = Object.assign(document.createElement("button"), { type: "button" });
      Object.assign(button.dataset, { confidence: a.confidence, key: a.key });
      button.append(`${a.label} `, Object.assign(document.createElement("kbd"), { textContent: a.key }));
      button.addEventListener("click", () => answerWith(button));
      return button;
    });
    group.style.gridTemplateColumns = `repeat(${ratings.length}, auto)`;
    group.replaceChildren(...ratings);
    group.dataset.built = built;
    return;
  }
  const buttons = answers.map((a) => {
    const button = Object.assign(document.createElement("button"), { type: "button" });
    Object.assign(button.dataset, { query: a.query, confidence: a.confidence, key: a.key });
    const key = Object.assign(document.createElement("kbd"), { textContent: a.key });
    button.append(`${a.label} `, key);
    button.addEventListener("click", () => answerWith(button));
    return button;
  });
  const perQuery = answers.filter((a) => a.query === 0).length;
  group.style.gridTemplateColumns = `repeat(${perQuery}, auto)`;
  group.replaceChildren(...buttons);
  group.dataset.built = built;
}

function queryName(answers, i) {
  const button = answers.find((a) => a.query === i);
  return button ? button.label.split(" ")[0] : String(i + 1);
}

function queryTitle(answers, i, count) {
  return `${queryName(answers, i)}${count === 2 ? (i === 0 ? " (upper)" : " (lower)") : ""}`;
}

// The queries in display order: in a trial with the answers after the first (two queries: upper,
// buttons, lower), in the instructions' example with a caption under each.
function placeQueries(container, images, answers, idPrefix, answersGroup = null) {
  const named = images.map((img, i) => {
    img.id = `${idPrefix}${i}`;
    img.alt = `query ${queryTitle(answers, i, images.length)}`;
    return img;
  });
  if (answersGroup) return container.replaceChildren(named[0], answersGroup, ...named.slice(1));
  const captioned = named.flatMap((img, i) => [
    img,
    Object.assign(document.createElement("p"), { className: "caption", textContent: queryTitle(answers, i, named.length) }),
  ]);
  container.replaceChildren(...captioned);
}

// Grid layout: every query is a button holding its image and its number; the ratings follow the grid.
function placeChoices(container, images, answers, idPrefix, answersGroup = null) {
  const choices = images.map((img, i) => {
    img.id = `${idPrefix}${i}`;
    img.alt = `image ${i + 1}`;
    const choice = Object.assign(document.createElement("button"), { type: "button", className: "choice" });
    const key = answers.find((a) => a.query === i)?.key ?? String(i + 1);
    Object.assign(choice.dataset, { query: i, key });
    choice.setAttribute("aria-pressed", "false");
    choice.append(img, Object.assign(document.createElement("kbd"), { textContent: key }));
    if (answersGroup) choice.addEventListener("click", () => !state.locked && chooseQuery(i));
    return choice;
  });
  const grid = Object.assign(document.createElement("div"), { className: "choices" });
  grid.style.gridTemplateColumns = `repeat(${Math.min(images.length, 5)}, auto)`; // the trial's: fitTrial
  grid.replaceChildren(...choices);
  container.replaceChildren(grid, ...(answersGroup ? [answersGroup] : []));
}

// --- image sizes ----------------------------------------------------------------------------

// The trial's images as large as the window allows, never beyond SETTINGS.maxImagePx: of the two layouts
// (side by side; references stacked, for narrow windows) the one whose references are larger. The sizes
// are found by trying them (the page's own fonts and buttons decide what fits), a few reflows a trial.
function fits(trial) {
  const root = document.documentElement;
  return Math.max(trial.scrollWidth, root.scrollWidth) <= root.clientWidth && root.scrollHeight <= root.clientHeight;
}

function largestFitting(trial, set, low, high) {
  set(low);
  if (!fits(trial)) return low;
  let top = high;
  while (top - low > 1) {
    const mid = Math.floor((low + top) / 2);
    set(mid);
    if (fits(trial)) low = mid;
    else top = mid;
  }
  // Button labels rewrap as a column widens (a wider one can be shorter): look a little further up.
  for (let px = low + 1; px < Math.min(high, low + 33); px++) {
    set(px);
    if (fits(trial)) low = px;
  }
  set(low);
  return low;
}

function fitTrial() {
  const trial = $("trial");
  if (trial.hidden) return;
  const max = SETTINGS.maxImagePx;
  const setRef = (px) => trial.style.setProperty("--ref", `${px}px`);
  const setQuery = (px) => trial.style.setProperty("--query", `${px}px`);
  const choices = trial.querySelector(".choices");
  const n = trial.querySelectorAll(".choice").length;
  // Pair layout: side by side, or stacked; grid layout (odd-one-out): the choices in one row, or in two.
  const arrangements = choices
    ? [...new Set([Math.min(n, 5), Math.ceil(n / 2)])].map((columns) => ({ stacked: false, columns }))
    : [{ stacked: false }, { stacked: true }];
  const arrange = ({ stacked, columns }) => {
    trial.classList.toggle("stacked", stacked);
    if (columns) choices.style.gridTemplateColumns = `repeat(${columns}, auto)`;
  };
  const score = (a) => (choices ? a.query : Math.min(a.ref / 3, a.query / 4));
  let best = null;
  for (const arrangement of arrangements) {
    arrange(arrangement);
    setQuery(48);
    // References first (queries kept at 4/3 of them), then the queries grow into what is left.
    const ref = choices
      ? 0
      : largestFitting(trial, (px) => { setRef(px); setQuery(Math.min(max, Math.round((px * 4) / 3))); }, 32, max + 1);
    const query = largestFitting(trial, setQuery, 48, max + 1);
    const tried = { ...arrangement, ref, query };
    if (!best || score(tried) > score(best)) best = tried;
  }
  arrange(best);
  setRef(best.ref);
  setQuery(best.query);
}

addEventListener("resize", fitTrial);
document.addEventListener("fullscreenchange", fitTrial);

// Shows a preloaded trial; resolves with the participant's answer.
function present(loaded, label, progress) {
  const { trial, images } = loaded;
  const grid = trial.layout === "grid";
  renderAnswers(trial.answers, trial.layout);
  state.chosen = null;
  state.wrongFeedback = trial.wrong_feedback;
  state.layout = trial.layout;
  placeReferences("refs", trial, images);
  for (const side of ["refs-left", "refs-right"]) $(side).hidden = grid;
  document.querySelector("#trial .answers").setAttribute("aria-label", trial.question);
  $("trial-question").textContent = trial.question;
  $("trial-question").hidden = !grid;
  (grid ? placeChoices : placeQueries)(
    $("trial-queries"), images.queries, trial.answers, "query-", document.querySelector("#trial .answers"),
  );
  setButtons(false); // after placing: the grid's choices are new buttons, and they start locked too
  $("trial-label").textContent = label;
  $("trial-feedback").textContent = "";
  $("progress-bar").style.width = `${100 * progress}%`;
  state.focusLost = 0;
  show("trial");
  fitTrial();
  $("fullscreen-nag").hidden = Boolean(document.fullscreenElement) || !document.fullscreenEnabled;
  return new Promise((resolve) => {
    requestAnimationFrame((frameTime) => {
      // The callback runs for the first frame that paints the trial; its time stamp starts the clock.
      state.shownAt = frameTime;
      setTimeout(() => setButtons(true), SETTINGS.buttonLockMs);
    });
    state.onAnswer = (chosenQuery, confidence) => {
      state.onAnswer = null;
      setButtons(false);
      resolve({
        trial_index: trial.trial_index,
        chosen_query: chosenQuery,
        confidence,
        rt_ms: Math.max(0, performance.now() - state.shownAt),
        focus_lost: state.focusLost,
        shown: trial.shown, // main trials: the server's signed record of when it served the trial
      });
    };
  });
}

function answerWith(button) {
  if (state.locked || !state.onAnswer) return;
  const query = button.dataset.query === undefined ? state.chosen : Number(button.dataset.query);
  if (query === null) return;
  state.onAnswer(query, Number(button.dataset.confidence));
}

document.addEventListener("keydown", (event) => {
  if ($("trial").hidden) return;
  const choice = document.querySelector(`#trial .choice[data-key="${event.key}"]`);
  if (choice && !state.locked) return chooseQuery(Number(choice.dataset.query));
  const button = document.querySelector(`#trial .answers button[data-key="${event.key}"]`);
  if (button) answerWith(button);
});

async function showFeedback(correct) {
  $("trial-feedback").textContent = correct ? "Correct!" : state.wrongFeedback;
  $("trial-feedback").className = `trial-feedback ${correct ? "right" : "wrong"}`;
  await new Promise((resolve) => setTimeout(resolve, 1200));
}

// --- flow ----------------------------------------------------------------------------

function clickOnce(id) {
  return new Promise((resolve) => $(id).addEventListener("click", resolve, { once: true }));
}

function queriesSentence(answers) {
  const names = [...new Set(answers.map((a) => queryName(answers, a.query)))];
  return names.length === 2 ? `two query images, ${names[0]} (upper) and ${names[1]} (lower).` : `${names.length} query images, ${names.join(", ")}.`;
}

function gridInstructionsHtml(session) {
  const n = session.answers.filter((a) => a.query !== undefined).length;
  const keys = session.answers.filter((a) => a.query === undefined).map((a) => `${a.key} (${a.label})`);
  const kind = session.condition === "synthetic"
    ? "generated by an algorithm to activate one unit of an artificial neural network"
    : session.natural_images;
  return `<p>On each trial you see ${n} images, ${kind}. ${n - 1} of them <strong>strongly activate</strong> one unit
    of an artificial neural network; one of them does not: it is the <strong>odd one out</strong>.</p>
    <p>Click the odd one out (or press its number, 1 to ${n}), then say how sure you are with the buttons below the
    images or the keys ${keys.join(", ")}. The buttons unlock ${SETTINGS.buttonLockMs / 1000} s after the images appear:
    look at them carefully.</p>
    <p>There are ${session.n_trials} trials${session.practice_trials ? `, after a practice block of ${session.practice_trials} trials with feedback` : ""}.
    Some trials are easy checks of attention.</p>`;
}

function instructionsHtml(session) {
  if (session.layout === "grid") return gridInstructionsHtml(session);
  const answers = session.answers;
  const refs = session.condition === "none"
    ? "<p>You will see two query images and decide which one activates the unit more, without any reference images.</p>"
    : `<p>On each trial you see two groups of reference images of one unit of an artificial neural network.
       The images on one side <strong>strongly activate</strong> the unit; those on the other side
       <strong>barely activate</strong> it. ${session.condition === "synthetic" ? "The reference images were generated by an algorithm to activate the unit as strongly or as weakly as possible." : `The reference images are ${session.natural_images}.`}
       Which side shows the strongly activating images changes from trial to trial: read the captions
       (<span class="refs max"><strong>Strongly activating</strong></span> in red,
       <span class="refs min"><strong>Weakly activating</strong></span> in blue).</p>`;
  return `${refs}
    <p>Between them are ${queriesSentence(answers)} Choose the query that activates the unit
    <strong>more</strong>, and say how sure you are, with the buttons or the keys ${answers[0].key} to ${answers.at(-1).key}.
    The buttons unlock ${SETTINGS.buttonLockMs / 1000} s after the images appear: look at them carefully.</p>
    <p>There are ${session.n_trials} trials${session.practice_trials ? `, after a practice block of ${session.practice_trials} trials with feedback` : ""}.
    Some trials are easy checks of attention.</p>`;
}

// A practice example comes with its answer, marked on the image and said in words (a worked example).
function exampleCaption(example, queries) {
  if (example.answer === null || example.answer === undefined) return ["An example trial."];
  const right = queries[example.answer];
  (example.layout === "grid" ? right.closest(".choice") : right).classList.add("correct");
  const name = queryTitle(example.answers, example.answer, queries.length);
  const words = example.layout === "grid"
    ? `image ${name} is the odd one out: the others look like one another, it does not.`
    : `query ${name} activates the unit more: it looks more like the strongly activating images.`;
  return [
    "An example trial, solved: ",
    Object.assign(document.createElement("span"), { className: "example-answer", textContent: words }),
  ];
}

async function showInstructions(session) {
  $("instructions-text").innerHTML = instructionsHtml(session);
  if (session.example && session.condition !== "none") {
    const example = await Promise.all([
      decoded(session.example.references.min),
      decoded(session.example.references.max),
      decoded(session.example.queries),
    ]);
    const grid = session.example.layout === "grid";
    placeReferences("example", session.example, { min: example[0], max: example[1] });
    for (const side of ["example-left", "example-right"]) $(side).hidden = grid;
    (grid ? placeChoices : placeQueries)($("example-queries"), example[2], session.example.answers, "example-q");
    $("example-caption").replaceChildren(...exampleCaption(session.example, example[2]));
    $("example").hidden = false;
  }
  show("instructions");
  await api("POST", `/api/sessions/${state.token}/phase`, { phase: "instructions" });
  await clickOnce("instructions-done");
}

async function fullscreenAndWindow() {
  show("setup");
  for (;;) {
    await clickOnce("setup-go");
    await enterFullscreen();
    await new Promise((resolve) => setTimeout(resolve, 300));
    if (innerWidth >= SETTINGS.minWidth && innerHeight >= SETTINGS.minHeight) return;
    $("setup-problem").textContent =
      `Your window is ${innerWidth} × ${innerHeight} pixels; it needs at least ${SETTINGS.minWidth} × ${SETTINGS.minHeight}. ` +
      "Please enlarge it (or zoom out), then try again.";
    $("setup-problem").hidden = false;
  }
}

async function runPractice() {
  let session = await api("GET", `/api/sessions/${state.token}`);
  if (session.practice_block === null) return session;
  $("practice-intro-text").textContent =
    `First, ${session.practice_trials} practice trials with feedback. To continue, answer all of them correctly; ` +
    `you have up to ${session.max_practice_blocks} tries.`;
  show("practice-intro");
  await clickOnce("practice-go");
  await api("POST", `/api/sessions/${state.token}/phase`, { phase: "practice" });
  state.inTrials = true;
  while (session.status === "active" && session.practice_block !== null) {
    const block = session.practice_block;
    for (let i = session.practice_next_trial ?? 0; i < session.practice_trials; i += 1) {
      const loaded = await loadTrial(`/api/sessions/${state.token}/practice/${block}/${i}`);
      const answer = await present(loaded, `Practice ${block} · trial ${i + 1} of ${session.practice_trials}`, i / session.practice_trials);
      const stored = await api("POST", `/api/sessions/${state.token}/practice/${block}/responses`, answer);
      await showFeedback(stored.correct);
    }
    session = await api("GET", `/api/sessions/${state.token}`);
    if (session.status === "active" && session.practice_block !== null) {
      $("practice-intro-text").textContent = "Not all answers were correct. Please try the practice block once more.";
      show("practice-intro");
      await clickOnce("practice-go");
    }
  }
  state.inTrials = false;
  return session;
}

async function runMain(session) {
  if (session.next_trial === null) return;
  if (session.next_trial === 0) {
    $("main-intro-text").textContent = `Well done. Now the ${session.n_trials} trials of the study, without feedback.`;
    show("main-intro");
    await clickOnce("main-go");
  }
  await api("POST", `/api/sessions/${state.token}/phase`, { phase: "main" });
  state.inTrials = true;
  const queued = new Set(outbox().map((r) => r.trial_index));
  for (let i = session.next_trial; i < session.n_trials; i += 1) {
    if (queued.has(i)) continue;
    const loaded = await loadTrial(`/api/sessions/${state.token}/trials/${i}`);
    const answer = await present(loaded, `Trial ${i + 1} of ${session.n_trials}`, i / session.n_trials);
    saveOutbox([...outbox(), answer]);
    if (SETTINGS.feedback) {
      await flushOutbox();
      const stored = await api("POST", `/api/sessions/${state.token}/responses`, answer);
      await showFeedback(stored.correct);
    } else {
      flushOutbox().catch(() => {});
    }
  }
  state.inTrials = false;
  await flushOutbox();
}

async function finish() {
  show("feedback");
  await clickOnce("feedback-send");
  const text = $("feedback-text").value.trim();
  // Feedback is optional: a refusal of it (say, a control character pasted in) never blocks completion.
  if (text) await api("POST", `/api/sessions/${state.token}/feedback`, { text }).catch(() => {});
  await complete();
}

async function complete() {
  await flushOutbox();
  const result = await api("POST", `/api/sessions/${state.token}/complete`);
  localStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(outboxKey());
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});
  const passed = result.status === "completed";
  $("done-title").textContent = passed ? "Thank you!" : "Thank you for your time";
  $("done-text").textContent = result.message;
  $("done-code-note").textContent = result.code_note;
  if (result.completion_code) $("completion-code").textContent = result.completion_code;
  $("done-code-line").hidden = false;
  show("done");
  if (result.redirect_url) {
    $("done-link").href = result.redirect_url;
    $("done-link-line").hidden = false;
    setTimeout(() => location.assign(result.redirect_url), 3000);
  }
  if (result.submit_url) {
    const form = Object.assign(document.createElement("form"), { method: "POST", action: result.submit_url });
    for (const [name, value] of Object.entries(result.submit_fields)) {
      form.append(Object.assign(document.createElement("input"), { type: "hidden", name, value }));
    }
    document.body.append(form);
    form.submit();
  }
}

async function resume(token) {
  state.token = token;
  await flushOutbox().catch(() => {});
  const session = await api("GET", `/api/sessions/${token}`);
  state.session = session;
  if (session.status === "completed" || session.status === "failed") return complete();
  if (session.status !== "active") return stop(`Your session has ${session.status}. Please return the study.`);
  if (session.practice_block !== null || session.next_trial === 0) await fullscreenAndWindow();
  const afterPractice = await runPractice();
  if (afterPractice.status !== "active") return complete();
  await runMain(afterPractice);
  return finish();
}

async function consentThenStart(params) {
  if (SETTINGS.full) return stop(SETTINGS.full); // the study stopped taking participants
  show("consent");
  const choice = await Promise.race([
    clickOnce("consent-yes").then(() => "yes"),
    clickOnce("consent-no").then(() => "no"),
  ]);
  if (choice === "no") {
    localStorage.setItem(DECLINED_KEY, "1");
    await api("POST", "/api/declines", withoutEmpty({ ...params, consent_version: SETTINGS.consentVersion })).catch(() => {});
    return stop("You declined to take part. Thank you for your time; you may close this window.");
  }
  const session = await api("POST", "/api/sessions", withoutEmpty({
    ...params,
    consent_version: SETTINGS.consentVersion,
    window: { width: innerWidth, height: innerHeight, device_pixel_ratio: devicePixelRatio },
    user_agent: navigator.userAgent.slice(0, 400),
  }));
  localStorage.setItem(TOKEN_KEY, session.token);
  state.token = session.token;
  await showInstructions(session);
  return resume(session.token);
}

async function main() {
  const params = platformParams();
  if (params.platform === "mturk" && params.assignment_id === MTURK_PREVIEW) return show("preview");
  if (isMobile()) return show("blocked");
  const saved = localStorage.getItem(TOKEN_KEY);
  if (saved) {
    try {
      return await resume(saved);
    } catch (err) {
      if (!(err instanceof HttpError && err.status === 404)) throw err;
      localStorage.removeItem(TOKEN_KEY);
    }
  }
  if (localStorage.getItem(DECLINED_KEY)) return stop("You declined to take part in this study.");
  return consentThenStart(params);
}

main().catch((err) => {
  if (err instanceof HttpError && [403, 409, 410].includes(err.status)) return stop(err.message);
  $("status").textContent = `Something went wrong: ${err.message}. Please reload the page.`;
});
