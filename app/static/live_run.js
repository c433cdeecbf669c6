// The live run page: one EventSource on /public/runs/{id}/events. Rows are keyed by
// (position, repetition), so a replay after a reconnect updates rows instead of adding them.
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
    $("connection").textContent = "";
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

  const url = "/public/runs/" + encodeURIComponent(runId) + "/events?token=" + encodeURIComponent(token);
  const source = new EventSource(url);
  const parse = (handler) => (message) => handler(JSON.parse(message.data));
  let ended = false;
  source.addEventListener("run.started", parse((data) => (ended ? onRestart(data) : onStarted(data))));
  source.addEventListener("run.verdict", parse(onVerdict));
  source.addEventListener("result.recorded", parse(onResult));
  source.addEventListener("run.progress", parse(setCounts));
  source.addEventListener("run.finished", parse(onEnd));
  source.addEventListener("run.cancelled", parse(onEnd));
  source.addEventListener("output.delta", parse(onDelta));
  source.addEventListener("step.completed", parse(onStep));
  source.addEventListener("turn.completed", parse(onTurn));
  source.addEventListener("open", () => { $("connection").textContent = ""; });
  source.addEventListener("error", () => {
    if (ended) {
      $("connection").textContent = "";
    } else if (source.readyState === EventSource.CLOSED) {
      $("connection").textContent = "(stream closed)";
    } else {
      $("connection").textContent = "(reconnecting…)";
    }
  });
})();
