// rushgate waiting page: listens to the place's event stream (or polls the position endpoint at
// the interval the server asks for), updates the page, and goes to the shop once admitted (the
// position answer sets the pass cookie). In the `pow` state (no place yet: the room asks for a
// proof of work first) it solves the challenge in a Web Worker, showing progress, leaves the
// answer in the room's rg_pow_ cookie and loads the page again, which joins with it.
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("rg-config").textContent);
  var page = document.getElementById("rg-page");
  // The page's strings in its language (web/i18n.json, chosen by the server).
  var t = cfg.t || {};
  function tr(key) { return t[key] || key; }
  // Singular for 1 in languages that have one (the server says; Intl when the browser has it).
  var plural = null;
  try { plural = new Intl.PluralRules(cfg.lang || "en"); } catch (e) { plural = null; }
  function isOne(n) { return plural ? plural.select(n) === "one" : (cfg.plural_one && n === 1); }
  function headline(state) { return tr("headline_" + (t["headline_" + state] ? state : "expired")); }
  var first = cfg.first_position || 0;
  function each(name, fn) {
    var els = document.querySelectorAll('[data-rg="' + name + '"]');
    for (var i = 0; i < els.length; i++) fn(els[i]);
  }
  function text(name, value) {
    each(name, function (el) { if (el.textContent !== String(value)) el.textContent = value; });
  }
  // The same wording as the server's (src/i18n.rs eta_text).
  function eta(e) {
    if (!e || e.p50 == null || e.p90 == null) return tr("eta_unknown");
    var b = Math.max(e.p90, e.p50);
    if (b < 60) return tr("eta_under_minute");
    var lo = Math.max(1, Math.ceil(e.p50 / 60)), hi = Math.ceil(b / 60);
    if (lo === hi) {
      var key = isOne(lo) && t.eta_minutes_one ? "eta_minutes_one" : "eta_minutes_other";
      return tr(key).replace("{n}", lo);
    }
    return tr("eta_range").replace("{lo}", lo).replace("{hi}", hi);
  }
  function progress(p) {
    if (p.state === "admitted") return 100;
    if (!p.position) return 0;
    first = Math.max(first, p.position);
    return Math.floor((first - p.position + 1) * 100 / (first + 1));
  }
  var opensAt = null;   // scheduled drop: local time of the opening, from the server's countdown
  function countdown() {
    if (opensAt === null) return;
    var s = Math.max(0, Math.ceil((opensAt - Date.now()) / 1000));
    var h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, sec = s % 60;
    text("countdown", (h ? h + ":" + (m < 10 ? "0" : "") : "") + m + ":" + (sec < 10 ? "0" : "") + sec);
  }
  setInterval(countdown, 1000);
  function render(p) {
    opensAt = p.opens_in_ms == null ? null : Date.now() + p.opens_in_ms;
    countdown();
    page.setAttribute("data-state", p.state);
    text("headline", headline(p.state));
    text("position", p.position);
    text("ahead", p.ahead);
    text("eta", eta(p.eta_seconds));
    text("message", p.message || "");
    var pct = progress(p);
    each("progress", function (el) {
      el.setAttribute("aria-valuenow", pct);
      if (el.firstElementChild) el.firstElementChild.style.width = pct + "%";
    });
  }
  // Shows a place; false once nothing more will come (admitted, gone, moved).
  function handle(p) {
    render(p);
    if (p.state === "admitted" || p.state === "expired") { location.replace(cfg.return_url); return false; }
    return p.state !== "transferred";   // another device holds the place now
  }
  function poll() {
    fetch(cfg.position_url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) { location.reload(); return null; }   // ticket lost: rejoin
        if (!r.ok) throw new Error("status " + r.status);
        return r.json();
      })
      .then(function (p) {
        if (p && handle(p)) setTimeout(poll, p.poll_after_ms || cfg.poll_after_ms || 2000);
      })
      .catch(function () { setTimeout(poll, Math.max(2000, cfg.poll_after_ms || 0)); });
  }
  // The place pushed by the server as it changes (an open stream also keeps the place alive);
  // polling when the browser has no EventSource or the stream cannot be had (503, a proxy
  // that buffers it: no event within 20 s).
  function listen() {
    if (!window.EventSource) return false;
    var es = new EventSource(cfg.position_url.replace(/\/position$/, "/events"));
    var polling = false;
    function fallBack() {
      es.close();
      if (!polling) { polling = true; setTimeout(poll, 1000); }
    }
    var silent = setTimeout(fallBack, 20000);
    es.addEventListener("place", function (e) {
      clearTimeout(silent);
      silent = setTimeout(fallBack, 20000 + 15000);
      var p;
      try { p = JSON.parse(e.data); } catch (err) { return; }
      // Admitted: one poll answers with the pass cookie the shop's pages need, then goes on.
      if (p.state === "admitted") { clearTimeout(silent); es.close(); render(p); poll(); return; }
      if (!handle(p)) { clearTimeout(silent); es.close(); }
    });
    // A scheduled drop's countdown, and its opening (the place event that follows has the place).
    es.addEventListener("opening", function (e) {
      var o; try { o = JSON.parse(e.data); } catch (err) { return; }
      if (o.opens_in_ms != null) { opensAt = Date.now() + o.opens_in_ms; countdown(); }
    });
    es.addEventListener("opened", function () { text("notice", tr("opened_text")); });
    // Stock came back while this page showed sold out: once per restock (the number survives
    // a reload in sessionStorage, so a reloaded page is not told twice).
    es.addEventListener("restocked", function (e) {
      var r; try { r = JSON.parse(e.data); } catch (err) { return; }
      var key = "rg-restock-" + cfg.room, told = 0;
      try { told = Number(sessionStorage.getItem(key) || 0); } catch (err) { told = 0; }
      if (r.restock <= told) return;
      try { sessionStorage.setItem(key, String(r.restock)); } catch (err) { /* private mode */ }
      text("notice", tr("restocked_text"));
    });
    // A heartbeat comment fires no event; an unchanged place sends nothing: refresh the timer
    // on the stream's open too.
    es.onopen = function () { clearTimeout(silent); silent = setTimeout(fallBack, 60000); };
    es.onerror = function () {
      // CLOSED: the server refused the stream (no reconnect follows); poll instead.
      if (es.readyState === 2) { clearTimeout(silent); fallBack(); }
    };
    return true;
  }
  function bar(name, pct) {
    each(name, function (el) {
      el.setAttribute("aria-valuenow", pct);
      if (el.firstElementChild) el.firstElementChild.style.width = pct + "%";
    });
  }
  function again(ms) { setTimeout(function () { location.replace(cfg.return_url); }, ms); }
  function solve(p) {
    var expected = Math.pow(2, p.difficulty);
    var worker;
    try { worker = new Worker(p.worker_url); } catch (e) {
      text("pow-status", tr("pow_unsupported"));
      return;
    }
    worker.onmessage = function (e) {
      var m = e.data || {};
      if (m.nonce != null) {
        worker.terminate();
        bar("pow-progress", 100);
        text("pow-status", tr("pow_done"));
        var maxAge = Math.max(1, Math.floor(p.expires_in_ms / 1000));
        document.cookie = p.cookie + "=" + p.challenge + ":" + m.nonce + "; Path=/; Max-Age=" + maxAge +
          "; SameSite=Lax" + (location.protocol === "https:" ? "; Secure" : "");
        location.replace(cfg.return_url);
      } else if (m.tried != null) {
        // The chance that a search this long has found an answer: a bar that moves steadily.
        var pct = Math.min(99, Math.floor(100 * (1 - Math.exp(-m.tried / expected))));
        bar("pow-progress", pct);
        text("pow-status", tr("pow_checking") + " " + pct + "%");
      } else if (m.error) {
        text("pow-status", tr("pow_failed"));
        again(5000);
      }
    };
    worker.onerror = function () { text("pow-status", tr("pow_failed")); again(10000); };
    worker.postMessage({ challenge: p.challenge, difficulty: p.difficulty });
    // An answer found after the challenge expired is refused: start over with a new one.
    again(Math.max(5000, p.expires_in_ms - 2000));
  }
  // Moving the place to another device: a one-time code, shown as text, link and QR code (the
  // SVG comes from rushgate itself). Shop templates without these elements simply lack it.
  each("move", function (button) {
    button.addEventListener("click", function () {
      button.disabled = true;
      fetch(cfg.position_url.replace(/\/position$/, "/transfer"), {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ "return": cfg.return_url })
      }).then(function (r) { return r.json().then(function (b) { return { ok: r.ok, body: b }; }); })
        .then(function (res) {
          button.disabled = false;
          if (!res.ok) { text("move-text", res.body.detail || tr("move_unavailable")); }
          else {
            text("move-text", res.body.code);
            text("move-expires", res.body.expires_in);
            each("move-link", function (a) { a.href = res.body.url; });
            each("move-qr", function (el) { el.innerHTML = res.body.qr_svg || ""; });
          }
          each("move-code", function (el) { el.hidden = false; });
        })
        .catch(function () { button.disabled = false; });
    });
  });
  if (cfg.state === "pow" && cfg.pow) { solve(cfg.pow); return; }
  if (cfg.opens_in_ms != null) { opensAt = Date.now() + cfg.opens_in_ms; countdown(); }
  if (cfg.state === "admitted") { location.replace(cfg.return_url); return; }
  if (!listen()) setTimeout(poll, cfg.poll_after_ms || 2000);
})();
