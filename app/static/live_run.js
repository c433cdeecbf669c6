// The live run page: an EventSource on /public/runs/{id}/events (a new one when the browser
// gives up on the old, or when the stream goes silent: see connect). Rows are keyed by (position, repetition), so a replay
// after a reconnect updates rows instead of adding them.
"use strict";

(function () {
  const runId = location.pathname.split("/").filter(Boolean).pop();
  const token = new URLSearchParams(location.search).get("token") || "";
  const rows = new Map(); // "position:repetition" -> <tr>
  const metrics = new Map(); // name -> {passed, scored, sum}
  const $ = (id) => document.getElementById(id);
  let total = 0;

  $("run-id").textContent = runId;

  function setStatus(status) {
    $("status").textContent = status;
    $("status").dataset.status = status;
  }

  function setCounts(counts) {
    if (typeof counts.total === "number") {
      total = counts.total;
      $("total").textContent = String(total);
    }
    for (const name of ["done", "passed", "failed", "errored"]) {
      if (typeof counts[name] === "number") $(name).textContent = String(counts[name]);
    }
    const done = Number($("done").textContent);
    const percent = total > 0 ? Math.floor((100 * done) / total) : 0;
    $("progress").textContent = percent + " %";
    $("progress").dataset.percent = String(percent);
    $("progress-bar").style.width = percent + "%";
  }

  function cell(row, className) {
    const td = document.createElement("td");
    td.className = className;
    row.appendChild(td);
    return td;
  }

  function rowFor(position, repetition) {
    const key = position + ":" + repetition;
    let row = rows.get(key);
    if (!row) {
      row = document.createElement("tr");
      row.dataset.key = key;
      cell(row, "position").textContent = repetition ? position + " (" + repetition + ")" : String(position);
      cell(row, "status").textContent = "running";
      cell(row, "output");
      cell(row, "activity").appendChild(document.createElement("ol"));
      cell(row, "latency");
      cell(row, "evaluations");
      row.className = "running";
      rows.set(key, row);
      const body = $("results").tBodies[0];
      const comesAfter = (other) => {
        const [p, r] = other.dataset.key.split(":").map(Number);
        return p > position || (p === position && r > repetition);
      };
      // Results mostly arrive in order: append unless the last row belongs after this one.
      const last = body.rows[body.rows.length - 1];
      const after = last && comesAfter(last) ? Array.from(body.rows).find(comesAfter) : null;
      body.insertBefore(row, after || null);
    }
    return row;
  }

  function renderMetrics() {
    const body = $("metrics").tBodies[0];
    body.textContent = "";
    for (const [name, m] of metrics) {
      const tr = document.createElement("tr");
      tr.dataset.metric = name;
      cell(tr, "name").textContent = name;
      cell(tr, "rate").textContent = m.scored ? Math.round((100 * m.passed) / m.scored) + " %" : "–";
      cell(tr, "score").textContent = m.scored ? (m.sum / m.scored).toFixed(2) : "–";
      body.appendChild(tr);
    }
  }

  function onStarted(data) {
    setStatus(data.status);
    for (const metric of data.metrics || []) {
      if (!metrics.has(metric.name)) metrics.set(metric.name, { passed: 0, scored: 0, sum: 0 });
    }
    setCounts({ total: data.total });
    renderMetrics();
  }

  function onResult(data) {
    const row = rowFor(data.position, data.repetition);
    if (row.dataset.final === "1") return; // already shown (a replay after a reconnect)
    row.dataset.final = "1";
    row.className = data.status;
    row.querySelector(".status").textContent = data.error_type ? data.status + " (" + data.error_type + ")" : data.status;
    row.querySelector(".output").textContent = data.output != null ? data.output : data.error_message || "";
    row.querySelector(".latency").textContent = data.latency_ms != null ? String(Math.round(data.latency_ms)) : "";
    row.querySelector(".evaluations").textContent = (data.evaluations || [])
      .map((e) => e.metric + ": " + (e.error ? "error" : (e.passed ? "pass" : "fail") + " (" + Number(e.score).toFixed(2) + ")"))
      .join(", ");
    for (const e of data.evaluations || []) {
      if (e.error) continue; // not scored: no part of the metric's pass rate or mean, as in the summary
      const m = metrics.get(e.metric) || { passed: 0, scored: 0, sum: 0 };
      m.scored += 1;
      m.sum += Number(e.score) || 0;
      if (e.passed) m.passed += 1;
      metrics.set(e.metric, m);
    }
    renderMetrics();
  }

  function onDelta(data) {
    const row = rowFor(data.position, data.repetition);
    if (row.dataset.final === "1") return;
    const output = row.querySelector(".output");
    if (data.reset) output.textContent = ""; // the call was retried: start over
    output.textContent += data.text;
  }

  // An agent's steps and a conversation's turns, as each completes; keyed by number, so a
  // replay after a reconnect shows each once.
  function addActivity(data, key, text) {
    const list = rowFor(data.position, data.repetition).querySelector(".activity ol");
    if (list.querySelector('[data-key="' + key + '"]')) return;
    const item = document.createElement("li");
    item.dataset.key = key;
    item.textContent = text;
    list.appendChild(item);
  }

  function callsText(calls) {
    return (calls || []).map((c) => c.name + "(" + JSON.stringify(c.arguments) + ")").join(", ");
  }

  function onStep(data) {
    const calls = callsText(data.tool_calls);
    const said = calls ? "calls " + calls : data.text;
    const trouble = data.error ? " [" + data.error + "]" : data.stopped ? " [stopped: " + data.stopped + "]" : "";
    addActivity(data, "step-" + data.step, "step " + data.step + ": " + said + trouble);
  }

  function onTurn(data) {
    const calls = callsText(data.tool_calls);
    const answer = data.text + (calls ? " (calls " + calls + ")" : "");
    const ended = data.ended ? " [" + data.ended + "]" : "";
    addActivity(data, "turn-" + data.turn, "turn " + data.turn + ": user: " + data.user + " / assistant: " + answer + ended);
  }

  function onEnd(data) {
    // The server ends the stream (after a gated run's verdict); reconnecting then gets 204,
    // which stops EventSource for good.
    ended = true;
    setStatus(data.status);
    setCounts(data);
    setConnection("ended", "");
  }

  function onVerdict(data) {
    $("gate").textContent = "gate: " + data.status + ((data.reasons || []).length ? " (" + data.reasons.join("; ") + ")" : "");
    $("gate").dataset.status = data.status;
  }

  function onRestart(data) {
    ended = false; // more repetitions were added to the run
    $("gate").textContent = "";
    onStarted(data);
  }

  // EventSource reconnects by itself after a dropped connection, but gives up for good on any
  // answer but 200: a refusal of the stream caps or of a busy server (429, 503), a 401 once the
  // link's token has expired, or a 204 when the run has ended and nothing is left to send (its
  // events pruned by retention). EventSource does not say which, so the page asks the events
  // URL itself (reading only the status) and acts on the answer: it stops for good where no
  // retry mends it, else opens a new EventSource after a growing delay (or the server's
  // Retry-After), resuming after the last event it has (as `last_event_id`: a new EventSource
  // cannot send the header).
  const RETRY_FIRST_MS = 2000;
  const RETRY_MAX_MS = 30000;
  // A connection can also go silent without closing (a NAT or proxy timing it out, a laptop
  // waking on another network), and EventSource then reports nothing. The server sends a
  // heartbeat event on a quiet stream (at the interval the page is served with), so a stream
  // that has said nothing for SILENT_HEARTBEATS of them is taken for dead: closed, and reopened
  // after the last event the page has.
  const SILENT_HEARTBEATS = 2.5;
  const silenceMs = SILENT_HEARTBEATS * Number(document.body.dataset.heartbeatMs);
  const HANDLERS = {
    "run.started": (data) => (ended ? onRestart(data) : onStarted(data)),
    "run.verdict": onVerdict,
    "result.recorded": onResult,
    "run.progress": setCounts,
    "run.finished": onEnd,
    "run.cancelled": onEnd,
    "output.delta": onDelta,
    "step.completed": onStep,
    "turn.completed": onTurn,
  };
  let ended = false;
  let source = null;
  let lastEventId = "";
  let failures = 0; // new EventSources refused (or gone silent) in a row
  let lastHeard = 0; // when the stream last said anything: an event, a heartbeat, its opening
  let silenceTimer = null;

  function setConnection(state, text) {
    $("connection").textContent = text;
    $("connection").dataset.state = state;
  }

  function eventsUrl() {
    const query = "?token=" + encodeURIComponent(token) + (lastEventId ? "&last_event_id=" + encodeURIComponent(lastEventId) : "");
    return "/public/runs/" + encodeURIComponent(runId) + "/events" + query;
  }

  function connect() {
    source = new EventSource(eventsUrl());
    for (const [type, handler] of Object.entries(HANDLERS)) {
      source.addEventListener(type, (message) => {
        heard();
        if (message.lastEventId) lastEventId = message.lastEventId;
        handler(JSON.parse(message.data));
      });
    }
    // Every event says the stream lives, those the page does not show too (evaluation.delta:
    // a judge streaming sends no heartbeat meanwhile).
    for (const type of ["heartbeat", "evaluation.delta"]) source.addEventListener(type, heard);
    source.addEventListener("open", () => {
      heard();
      failures = 0;
      setConnection("open", "");
    });
    source.addEventListener("error", onError);
    heard();
    watchSilence();
  }

  function heard() {
    lastHeard = Date.now();
  }

  // One timer, re-armed only when it fires: events may come many times a second.
  function watchSilence() {
    clearTimeout(silenceTimer);
    if (!(silenceMs > 0) || source.readyState === EventSource.CLOSED) return; // see onError
    const quiet = Date.now() - lastHeard;
    if (quiet < silenceMs) {
      silenceTimer = setTimeout(watchSilence, silenceMs - quiet);
      return;
    }
    source.close();
    failures += 1;
    if (failures === 1) {
      setConnection("reconnecting", "(reconnecting…)");
      connect();
    } else {
      retryLater(0);
    }
  }

  function onError() {
    if (ended) {
      setConnection("ended", "");
    } else if (source.readyState !== EventSource.CLOSED) {
      setConnection("reconnecting", "(reconnecting…)");
    } else {
      failures += 1;
      streamAnswer().then(afterRefusal);
    }
  }

  // The status and Retry-After (in ms, 0 if none) of the events URL asked for again, the body
  // left unread (status 0: no answer at all).
  function streamAnswer() {
    const request = new AbortController();
    return fetch(eventsUrl(), { cache: "no-store", credentials: "omit", signal: request.signal })
      .then((response) => {
        request.abort(); // a 200 is a live stream: the new EventSource opens its own
        return { status: response.status, retryAfterMs: retryAfterMs(response.headers.get("Retry-After")) };
      })
      .catch(() => ({ status: 0, retryAfterMs: 0 }));
  }

  function retryAfterMs(value) {
    if (!value) return 0;
    const ms = /^\d+$/.test(value.trim()) ? Number(value) * 1000 : Date.parse(value) - Date.now();
    return Number.isFinite(ms) ? Math.max(0, ms) : 0;
  }

  function afterRefusal(answer) {
    const status = answer.status;
    if (status === 204) {
      // The run has ended and nothing is left after what the page has: its end was pruned.
      ended = true;
      setStatus("ended");
      setConnection(
        "pruned",
        lastEventId
          ? "This run has ended; the rest of its events are no longer kept, so what is shown is partial."
          : "This run has ended; its events are no longer kept.",
      );
    } else if (status === 401 || status === 403) {
      setConnection("expired", "This link has expired or is no longer valid: a new one is needed to follow the run.");
    } else if (status === 404) {
      setConnection("gone", "This run no longer exists.");
    } else if (status >= 400 && status < 500 && status !== 429) {
      setConnection("refused", "The server refuses this stream (HTTP " + status + "): reload the page to try again.");
    } else {
      retryLater(answer.retryAfterMs);
    }
  }

  function retryLater(retryAfterMs) {
    const growing = Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** (failures - 1));
    // Spread out pages refused together; never sooner than the server asked.
    const delay = Math.max(growing * (0.75 + Math.random() / 2), retryAfterMs * (1 + Math.random() / 4));
    setConnection("waiting", "(cannot connect: retrying in " + Math.round(delay / 1000) + " s)");
    setTimeout(connect, delay);
  }

  connect();
})();
