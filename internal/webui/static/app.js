// moatd web UI: vanilla JavaScript against the v1 API of this origin. Nothing here is
// fetched from anywhere else, and nothing from the API is ever parsed as HTML: every value
// reaches the page through textContent or attributes set by el().
"use strict";

const TOKEN_KEY = "moat.token";
const $ = (id) => document.getElementById(id);

// el builds an element: attrs are properties or attributes, children are nodes or strings
// (strings become text nodes, never markup).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// ---------------------------------------------------------------- messages

let flashTimer = 0;
function flash(msg, kind) {
  const f = $("flash");
  f.textContent = msg;
  f.className = kind || "ok";
  f.hidden = false;
  clearTimeout(flashTimer);
  if (kind !== "error") flashTimer = setTimeout(() => { f.hidden = true; }, 6000);
}
function fail(err) {
  flash(err && err.message ? err.message : String(err), "error");
}
// guard runs an async action and reports its error instead of throwing it away.
function guard(fn) {
  return async (ev) => {
    if (ev && ev.preventDefault && (ev.type === "submit")) ev.preventDefault();
    try { await fn(ev); } catch (err) { fail(err); }
  };
}

// ---------------------------------------------------------------- auth and API

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function showAuthState() {
  const has = token() !== "";
  $("auth-state").textContent = has ? "token set for this tab" : "";
  $("signout").hidden = !has;
}

let pendingLogin = null;
// askToken shows the token dialog once, however many requests are waiting for it.
function askToken(wrong) {
  if (pendingLogin) return pendingLogin;
  pendingLogin = new Promise((resolve, reject) => {
    const dlg = $("login"), form = $("login-form"), input = $("login-token"), msg = $("login-error");
    msg.hidden = !wrong;
    msg.textContent = wrong ? "moatd refused that token." : "";
    input.value = "";
    const done = (ok) => {
      form.removeEventListener("submit", onSubmit);
      $("login-cancel").removeEventListener("click", onCancel);
      dlg.removeEventListener("cancel", onCancel);
      if (dlg.open) dlg.close();
      pendingLogin = null;
      showAuthState();
      if (ok) resolve(); else reject(new Error("unauthenticated: this moatd needs an API token"));
    };
    const onSubmit = (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      done(true);
    };
    const onCancel = (ev) => { if (ev) ev.preventDefault(); done(false); };
    form.addEventListener("submit", onSubmit);
    $("login-cancel").addEventListener("click", onCancel);
    dlg.addEventListener("cancel", onCancel);
    dlg.showModal();
    input.focus();
  });
  return pendingLogin;
}

class APIError extends Error {
  constructor(status, kind, message) {
    super(kind ? `${kind}: ${message}` : message);
    this.status = status;
    this.kind = kind;
  }
}

async function errorOf(res) {
  const text = await res.text();
  try {
    const e = JSON.parse(text).error;
    if (e && e.kind) return new APIError(res.status, e.kind, e.message || "");
  } catch (_) { /* not JSON */ }
  return new APIError(res.status, "", `HTTP ${res.status}: ${text.slice(0, 300)}`);
}

// api calls the v1 API of this origin. opts.json is sent as a JSON body; opts.body as is;
// opts.raw returns the Response. A 401 asks for a token and tries again.
async function api(method, path, opts = {}) {
  let asked = false;
  for (;;) {
    const headers = new Headers(opts.headers || {});
    const t = token();
    if (t) headers.set("Authorization", "Bearer " + t);
    let body = opts.body;
    if (opts.json !== undefined) body = JSON.stringify(opts.json);
    // moatd takes POST bodies only as JSON (so that cross-site forms cannot drive it).
    if (opts.json !== undefined || method === "POST") headers.set("Content-Type", "application/json");
    const res = await fetch(path, { method, headers, body, cache: "no-store", credentials: "omit" });
    if (res.status === 401) {
      if (t) sessionStorage.removeItem(TOKEN_KEY);
      await askToken(asked || t !== "");
      asked = true;
      continue;
    }
    if (!res.ok) throw await errorOf(res);
    if (opts.raw) return res;
    if (res.status === 204) return null;
    const ct = res.headers.get("Content-Type") || "";
    return ct.includes("json") ? res.json() : res.text();
  }
}

const enc = encodeURIComponent;
const sbPath = (id, rest) => `/v1/sandboxes/${enc(id)}${rest || ""}`;

// ---------------------------------------------------------------- small parsers

// splitArgv splits a command line into argv without a shell; the rule is shown in the page.
function splitArgv(line) {
  const out = [];
  let cur = "", inWord = false, i = 0;
  while (i < line.length) {
    const c = line[i];
    if (c === " " || c === "\t" || c === "\n" || c === "\r") {
      if (inWord) { out.push(cur); cur = ""; inWord = false; }
      i++;
    } else if (c === "'") {
      const j = line.indexOf("'", i + 1);
      if (j < 0) throw new Error("invalid_argument: unterminated ' quote");
      cur += line.slice(i + 1, j); inWord = true; i = j + 1;
    } else if (c === '"') {
      i++; inWord = true;
      for (;;) {
        if (i >= line.length) throw new Error('invalid_argument: unterminated " quote');
        const d = line[i];
        if (d === '"') { i++; break; }
        if (d === "\\" && (line[i + 1] === '"' || line[i + 1] === "\\")) { cur += line[i + 1]; i += 2; continue; }
        cur += d; i++;
      }
    } else if (c === "\\") {
      if (i + 1 >= line.length) throw new Error("invalid_argument: trailing \\");
      cur += line[i + 1]; inWord = true; i += 2;
    } else {
      cur += c; inWord = true; i++;
    }
  }
  if (inWord) out.push(cur);
  return out;
}

// parseBytes reads "512m", "1g", "1048576" (binary suffixes, like moat's CLI).
function parseBytes(s) {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(s);
  if (!m) throw new Error(`invalid_argument: memory ${JSON.stringify(s)}: want a size like 512m`);
  const mult = { "": 1, k: 1 << 10, m: 1 << 20, g: 1 << 30, t: 2 ** 40 }[m[2].toLowerCase()];
  return Math.round(parseFloat(m[1]) * mult);
}

// parsePairs reads KEY=VALUE lines into an object (blank lines skipped).
function parsePairs(text, what) {
  const out = {};
  for (const raw of text.split("\n")) {
    const line = raw.replace(/\r$/, "");
    if (line.trim() === "") continue;
    const eq = line.indexOf("=");
    if (eq <= 0) throw new Error(`invalid_argument: ${what} line ${JSON.stringify(line)}: want KEY=VALUE`);
    out[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  return Object.keys(out).length ? out : undefined;
}

function decodeStream(data, encoding) {
  if (encoding !== "base64") return data || "";
  const bin = atob(data);
  const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
  return new TextDecoder().decode(bytes) + `\n[binary output: ${bytes.length} bytes, shown lossily]`;
}

function fmtTime(s) {
  if (!s || s.startsWith("0001-")) return "";
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString();
}
function fmtSize(n) {
  if (n < 1024) return `${n} B`;
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return `${n.toFixed(1)} ${u[i]}`;
}
const KNOWN_STATES = ["active", "paused", "stopped", "creating", "error", "destroyed", "ready", "degraded", "unavailable"];
function badge(state) {
  const cls = KNOWN_STATES.includes(state) ? "s-" + state : "s-other";
  return el("span", { class: "badge " + cls }, state || "?");
}
function joinPath(dir, name) { return dir.replace(/\/+$/, "") + "/" + name; }
function parentPath(p) {
  const t = p.replace(/\/+$/, "");
  const i = t.lastIndexOf("/");
  return i <= 0 ? "/" : t.slice(0, i);
}

// ---------------------------------------------------------------- views

// The address bar names the view (#backends, #settings, #sessions) or a sandbox and its tab
// (#sandbox/ID/exec), so a view can be reloaded and linked to.
function setHash(h) {
  if (location.hash !== "#" + h) history.replaceState(null, "", "#" + h);
}

function route() {
  const parts = location.hash.replace(/^#/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "sandbox" && parts[1]) {
    showView("sandboxes", true);
    const tab = ["details", "exec", "files", "terminal"].includes(parts[2]) ? parts[2] : "details";
    showTab(tab, true);
    select(parts[1]).catch(fail);
    return;
  }
  showView(["backends", "settings", "sessions"].includes(parts[0]) ? parts[0] : "sandboxes");
}

function showView(name, keepHash) {
  if (!keepHash) setHash(name);
  for (const b of document.querySelectorAll("#nav button")) b.classList.toggle("active", b.dataset.view === name);
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + name;
  const load = { sandboxes: loadSandboxes, backends: loadBackends, settings: loadSettings, sessions: loadSessionsView }[name];
  if (load) load().catch(fail);
}

// ---------------------------------------------------------------- sandboxes

let selected = null; // id of the sandbox shown in the detail panel
let selectedInfo = null;

async function loadSandboxes() {
  const q = $("sb-destroyed").checked ? "?include_destroyed=1" : "";
  const list = (await api("GET", "/v1/sandboxes" + q)).sandboxes || [];
  list.sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
  const rows = list.map((s) => el("tr", { class: s.id === selected ? "selected" : "", dataset: { id: s.id } },
    el("td", {}, el("button", { type: "button", class: "link", title: "Open", onclick: () => select(s.id) }, s.id)),
    el("td", {}, s.name || ""),
    el("td", {}, s.backend || ""),
    el("td", {}, badge(s.status), s.last_error ? el("div", { class: "muted" }, s.last_error) : null),
    el("td", { class: "mono" }, s.session_id || ""),
    el("td", { title: s.created_at || "" }, fmtTime(s.created_at))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 6 }, "No sandboxes. Create one below.")));
  $("sb-rows").replaceChildren(...rows);
  $("sb-count").textContent = `${list.length} sandbox${list.length === 1 ? "" : "es"}`;
  if (selected && !list.some((s) => s.id === selected) && !$("sb-destroyed").checked) {
    // Destroyed elsewhere: keep the panel but say so.
    $("d-status").replaceChildren(badge("destroyed"));
  }
}

async function createSandbox(ev) {
  const f = ev.target.elements;
  const spec = { limits: {} };
  const str = (k) => f[k].value.trim();
  if (str("backend") && str("backend") !== "auto") spec.backend = str("backend");
  if (str("image")) spec.image = str("image");
  if (str("name")) spec.name = str("name");
  if (str("session")) spec.session_id = str("session");
  if (str("ttl")) spec.ttl = str("ttl");
  if (str("memory")) spec.limits.memory_bytes = parseBytes(str("memory"));
  if (str("cpus")) spec.limits.cpus = parseFloat(str("cpus"));
  if (str("pids")) spec.limits.pids = parseInt(str("pids"), 10);
  spec.env = parsePairs(f.env.value, "env");
  spec.labels = parsePairs(f.labels.value, "label");
  const btn = ev.target.querySelector("button[type=submit]");
  btn.disabled = true;
  try {
    const info = await api("POST", "/v1/sandboxes", { json: spec });
    flash(`Created ${info.id} on ${info.backend}.`);
    ev.target.reset();
    await loadSandboxes();
    await select(info.id);
  } finally {
    btn.disabled = false;
  }
}

async function select(id) {
  if (selected !== id) disconnectTerminal();
  selected = id;
  for (const tr of $("sb-rows").children) tr.classList.toggle("selected", tr.dataset.id === id);
  $("detail").hidden = false;
  $("exec-result").hidden = true;
  $("files-rows").replaceChildren();
  await loadDetail();
  if (!$("files-path").value || $("files-path").dataset.for !== id) {
    $("files-path").value = (selectedInfo && selectedInfo.spec && selectedInfo.spec.workdir) || "/workspace";
    $("files-path").dataset.for = id;
  }
  const tab = document.querySelector("#subtabs button.active").dataset.tab;
  setHash(`sandbox/${enc(id)}/${tab}`);
  if (tab === "files") listFiles().catch(fail);
  $("detail").scrollIntoView({ block: "nearest" });
}

async function loadDetail() {
  const info = await api("GET", sbPath(selected));
  selectedInfo = info;
  $("d-title").replaceChildren(el("span", { class: "mono" }, info.id), info.name ? ` (${info.name})` : "");
  $("d-status").replaceChildren(badge(info.status));
  $("d-json").textContent = JSON.stringify(info, null, 2);
}

function showTab(name, keepHash) {
  if (!keepHash && selected) setHash(`sandbox/${enc(selected)}/${name}`);
  for (const b of document.querySelectorAll("#subtabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const t of document.querySelectorAll("#detail .tab")) t.hidden = t.id !== "tab-" + name;
  if (name === "files" && selected) listFiles().catch(fail);
  if (name === "terminal") $("term").focus();
}

async function lifecycle(op) {
  const id = selected;
  if (!id) return;
  if (op === "destroy") {
    if (!confirm(`Destroy sandbox ${id}? Its files are lost.`)) return;
    disconnectTerminal();
    await api("DELETE", sbPath(id));
    flash(`Destroyed ${id}.`);
    $("detail").hidden = true;
    selected = null;
    selectedInfo = null;
    setHash("sandboxes");
    await loadSandboxes();
    return;
  }
  await api("POST", sbPath(id, "/" + op));
  flash(`${op}: done for ${id}.`);
  await Promise.all([loadDetail(), loadSandboxes()]);
}

// ---------------------------------------------------------------- exec

async function runExec() {
  const line = $("exec-cmd").value;
  if (!line.trim()) return;
  const req = {};
  if ($("exec-shell").checked) req.shell = line;
  else req.cmd = splitArgv(line);
  if ($("exec-workdir").value.trim()) req.workdir = $("exec-workdir").value.trim();
  const secs = parseFloat($("exec-timeout").value);
  if (secs > 0) req.timeout_ms = Math.round(secs * 1000);
  $("exec-meta").textContent = "running…";
  const res = await api("POST", sbPath(selected, "/exec"), { json: req });
  $("exec-result").hidden = false;
  $("exec-code").textContent = String(res.exit_code);
  const meta = [`${res.duration_ms} ms`];
  if (req.cmd) meta.push("argv " + JSON.stringify(req.cmd));
  if (res.truncated) meta.push("output truncated");
  $("exec-meta").textContent = meta.join(" · ");
  $("exec-stdout").textContent = decodeStream(res.stdout, res.stdout_encoding);
  $("exec-stderr").textContent = decodeStream(res.stderr, res.stderr_encoding);
}

// ---------------------------------------------------------------- files

async function listFiles() {
  const dir = $("files-path").value.trim() || "/";
  const list = await api("GET", sbPath(selected, `/files?path=${enc(dir)}&list=1`));
  const entries = (list.entries || []).slice().sort((a, b) => (b.is_dir - a.is_dir) || a.name.localeCompare(b.name));
  const rows = entries.map((e) => {
    const p = joinPath(dir, e.name);
    const actions = e.is_dir
      ? [el("button", { type: "button", onclick: () => { $("files-path").value = p; listFiles().catch(fail); } }, "Open"),
         " ",
         el("button", { type: "button", onclick: guard(() => downloadTar(p, e.name)) }, "Download .tar"),
         " ",
         el("button", { type: "button", class: "danger", onclick: guard(() => deleteFile(p, true)) }, "Delete")]
      : [el("button", { type: "button", onclick: guard(() => download(p, e.name)) }, "Download"),
         " ",
         el("button", { type: "button", class: "danger", onclick: guard(() => deleteFile(p)) }, "Delete")];
    return el("tr", {},
      el("td", { class: "mono" }, e.is_dir
        ? el("button", { type: "button", class: "link", onclick: () => { $("files-path").value = p; listFiles().catch(fail); } }, e.name + "/")
        : e.name),
      el("td", {}, e.is_dir ? "" : fmtSize(e.size)),
      el("td", { class: "mono" }, "0" + ((e.mode >>> 0) & 0o777).toString(8)),
      el("td", { title: e.mod_time || "" }, fmtTime(e.mod_time)),
      el("td", {}, actions));
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 5 }, "Empty directory.")));
  $("files-rows").replaceChildren(...rows);
}

async function download(path, name) {
  await save(await api("GET", sbPath(selected, `/files?path=${enc(path)}`), { raw: true }), name);
}

// downloadTar saves a directory as the server packs it (regular files and directories).
async function downloadTar(path, name) {
  await save(await api("GET", sbPath(selected, `/archive?path=${enc(path)}`), { raw: true }), name + ".tar");
}

async function save(res, name) {
  const url = URL.createObjectURL(await res.blob());
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function deleteFile(path, recursive) {
  if (!confirm(recursive ? `Delete ${path} and everything in it?` : `Delete ${path}?`)) return;
  await api("DELETE", sbPath(selected, `/files?path=${enc(path)}${recursive ? "&recursive=1" : ""}`));
  flash(`Deleted ${path}.`);
  await listFiles();
}

async function upload() {
  const files = $("upload-file").files;
  if (!files.length) throw new Error("invalid_argument: choose a file first");
  const dir = $("files-path").value.trim() || "/";
  for (const file of files) {
    await api("PUT", sbPath(selected, `/files?path=${enc(joinPath(dir, file.name))}`),
      { body: file, headers: { "Content-Type": "application/octet-stream" } });
  }
  flash(`Uploaded ${files.length} file${files.length === 1 ? "" : "s"} into ${dir}.`);
  $("upload-file").value = "";
  await listFiles();
}

// ---------------------------------------------------------------- terminal

// Screen is a minimal terminal: lines of text and a cursor. It understands \r, \n, \b, \t
// and the few escape sequences line editors use (erase line, cursor left/right, clear);
// every other escape sequence (colours, modes, titles) is stripped.
class Screen {
  constructor(pre) { this.pre = pre; this.rows = 24; this.reset(); }
  reset() {
    this.lines = [""]; this.row = 0; this.col = 0;
    this.state = 0; this.params = "";
    this.decoder = new TextDecoder();
    this.render();
  }
  write(bytes) {
    for (const ch of this.decoder.decode(bytes, { stream: true })) this.put(ch);
    this.trim();
    this.render();
  }
  line() {
    while (this.lines.length <= this.row) this.lines.push("");
    let l = this.lines[this.row];
    if (l.length < this.col) l += " ".repeat(this.col - l.length);
    return l;
  }
  put(ch) {
    switch (this.state) {
      case 1: // after ESC
        if (ch === "[") { this.state = 2; this.params = ""; }
        else if (ch === "]") this.state = 3;
        else if ("()#%".includes(ch)) this.state = 4;
        else this.state = 0;
        return;
      case 2: { // CSI: parameters, then a final byte @..~
        const c = ch.charCodeAt(0);
        if (c >= 0x40 && c <= 0x7e) { this.state = 0; this.csi(this.params, ch); }
        else this.params += ch;
        return;
      }
      case 3: // OSC: ends with BEL or ESC \
        if (ch === "\x07") this.state = 0;
        else if (ch === "\x1b") this.state = 4;
        return;
      case 4: this.state = 0; return;
    }
    switch (ch) {
      case "\x1b": this.state = 1; return;
      case "\r": this.col = 0; return;
      case "\n": this.row++; this.line(); return;
      case "\b": this.col = Math.max(0, this.col - 1); return;
      case "\t": this.col = (Math.floor(this.col / 8) + 1) * 8; return;
    }
    if (ch < " " || ch === "\x7f") return; // other controls (bell, ...)
    const l = this.line();
    this.lines[this.row] = l.slice(0, this.col) + ch + l.slice(this.col + 1);
    this.col++;
  }
  csi(params, final) {
    const nums = params.replace(/^[?>=!]/, "").split(";").map((n) => parseInt(n, 10) || 0);
    const n = nums[0] || 0;
    const l = this.line();
    switch (final) {
      case "K":
        if (n === 0) this.lines[this.row] = l.slice(0, this.col);
        else if (n === 1) this.lines[this.row] = " ".repeat(this.col) + l.slice(this.col);
        else this.lines[this.row] = "";
        break;
      case "C": this.col += Math.max(1, n); break;
      case "D": this.col = Math.max(0, this.col - Math.max(1, n)); break;
      case "G": this.col = Math.max(1, n) - 1; break;
      case "A": this.row = Math.max(this.top(), this.row - Math.max(1, n)); break;
      case "B": this.row += Math.max(1, n); this.line(); break;
      case "H": case "f":
        this.row = this.top() + Math.max(1, nums[0] || 1) - 1;
        this.col = Math.max(1, nums[1] || 1) - 1;
        this.line();
        break;
      case "J":
        if (n >= 2) { this.lines = [""]; this.row = 0; this.col = 0; }
        else if (n === 0) { this.lines.length = this.row + 1; this.lines[this.row] = l.slice(0, this.col); }
        break;
      case "P": this.lines[this.row] = l.slice(0, this.col) + l.slice(this.col + Math.max(1, n)); break;
      default: break; // colours and modes: stripped
    }
  }
  top() { return Math.max(0, this.lines.length - this.rows); }
  trim() {
    const max = 5000;
    if (this.lines.length > max) {
      const cut = this.lines.length - max;
      this.lines.splice(0, cut);
      this.row = Math.max(0, this.row - cut);
    }
  }
  render() {
    const pre = this.pre;
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const before = this.lines.slice(0, this.row).map((l) => l + "\n").join("");
    const cur = this.lines[this.row] || "";
    const after = this.lines.slice(this.row + 1).map((l) => "\n" + l).join("");
    pre.replaceChildren(
      document.createTextNode(before + cur.slice(0, this.col)),
      el("span", { class: "cursor" }, cur[this.col] || " "),
      document.createTextNode(cur.slice(this.col + 1) + after));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }
  // size is the rows and columns that fit in the element.
  size() {
    const probe = el("span", {}, "0".repeat(20));
    this.pre.append(probe);
    const r = probe.getBoundingClientRect();
    probe.remove();
    const cw = r.width / 20 || 8, chh = r.height || 16;
    const cs = getComputedStyle(this.pre);
    const w = this.pre.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    const h = this.pre.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
    const cols = Math.max(20, Math.min(500, Math.floor(w / cw)));
    const rows = Math.max(5, Math.min(200, Math.floor(h / chh)));
    this.rows = rows;
    return { rows, cols };
  }
}

let screen = null;
let ws = null;

// keyBytes maps a key press to what a terminal sends, or null to let the browser have it.
function keyBytes(e) {
  if (e.metaKey) return null;
  const special = {
    Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b",
    ArrowUp: "\x1b[A", ArrowDown: "\x1b[B", ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D",
    Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~", Insert: "\x1b[2~",
    PageUp: "\x1b[5~", PageDown: "\x1b[6~",
  }[e.key];
  if (special) return (e.altKey ? "\x1b" : "") + special;
  if (e.key.length !== 1 && [...e.key].length !== 1) return null;
  if (e.ctrlKey && !e.altKey) {
    const c = e.key.toLowerCase().charCodeAt(0);
    if (c >= 0x61 && c <= 0x7a) return String.fromCharCode(c - 0x60); // Ctrl-A..Z
    const map = { "@": "\x00", " ": "\x00", "[": "\x1b", "\\": "\x1c", "]": "\x1d", "^": "\x1e", "_": "\x1f" };
    return map[e.key] || null;
  }
  return (e.altKey ? "\x1b" : "") + e.key;
}

function b64url(s) {
  const bytes = new TextEncoder().encode(s);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function termStatus(text) { $("term-status").textContent = text; }

function sendKeys(s) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(new TextEncoder().encode(s));
}

async function connectTerminal() {
  disconnectTerminal();
  const id = selected;
  const line = $("term-cmd").value.trim() || "sh";
  const cmd = splitArgv(line);
  // Check the sandbox (and the token) over plain HTTP first: a WebSocket refused with 401
  // tells the page nothing.
  await api("GET", sbPath(id));
  screen.reset();
  const { rows, cols } = screen.size();
  const protos = ["moat.v1"];
  if (token()) protos.push("moat.bearer." + b64url(token()));
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const sock = new WebSocket(`${scheme}//${location.host}${sbPath(id, "/terminal")}`, protos);
  sock.binaryType = "arraybuffer";
  ws = sock;
  let opened = false, ended = false;
  termStatus("connecting…");
  $("term-connect").disabled = true;
  $("term-disconnect").disabled = false;
  sock.onopen = () => {
    opened = true;
    sock.send(JSON.stringify({ cmd, rows, cols }));
    termStatus(`connected: ${JSON.stringify(cmd)} (${cols}×${rows})`);
    $("term").focus();
  };
  sock.onmessage = (m) => {
    if (typeof m.data !== "string") { screen.write(new Uint8Array(m.data)); return; }
    let ev;
    try { ev = JSON.parse(m.data); } catch (_) { return; }
    if (ev.type === "exit") { ended = true; termStatus(`exited with code ${ev.exit_code}`); }
    else if (ev.type === "error") { ended = true; termStatus(`error: ${ev.error ? ev.error.kind + ": " + ev.error.message : "unknown"}`); }
  };
  sock.onclose = (c) => {
    if (ws === sock) ws = null;
    $("term-connect").disabled = false;
    $("term-disconnect").disabled = true;
    if (!opened) termStatus("could not connect (the server refused the WebSocket)");
    else if (!ended) termStatus(`disconnected${c.code && c.code !== 1000 ? " (code " + c.code + ")" : ""}`);
  };
}

function disconnectTerminal() {
  if (ws) {
    const s = ws;
    ws = null;
    s.close(1000, "closed by the user");
    termStatus("disconnected");
  }
}

let resizeTimer = 0;
function onWindowResize() {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    if (!ws || ws.readyState !== WebSocket.OPEN || $("tab-terminal").hidden) return;
    const { rows, cols } = screen.size();
    ws.send(JSON.stringify({ type: "resize", rows, cols }));
    termStatus(`${$("term-status").textContent.replace(/ \(\d+×\d+\)$/, "")} (${cols}×${rows})`);
  }, 150);
}

// ---------------------------------------------------------------- backends

let backendReport = null;

async function loadBackendNames() {
  backendReport = await api("GET", "/v1/backends");
  const names = (backendReport.backends || []).map((b) => b.name);
  const opts = (withAuto) => [
    ...(withAuto ? [el("option", { value: "auto" }, `auto (now: ${backendReport.auto || "none"})`)] : []),
    ...(backendReport.backends || []).map((b) =>
      el("option", { value: b.name }, `${b.name} — ${b.health ? b.health.state : "?"}`)),
  ];
  const keep = (sel) => sel.value;
  const c = $("create-backend"), s = $("sess-backend");
  const cv = keep(c), sv = keep(s);
  c.replaceChildren(...opts(true));
  s.replaceChildren(el("option", { value: "" }, "default routing"), ...opts(false));
  if (cv && [...c.options].some((o) => o.value === cv)) c.value = cv;
  if (sv && [...s.options].some((o) => o.value === sv)) s.value = sv;
  return names;
}

async function loadBackends() {
  await loadBackendNames();
  const r = backendReport;
  $("be-auto").replaceChildren(
    el("strong", {}, "auto picks: "), el("span", { class: "mono" }, r.auto || "nothing"),
    r.auto_explain ? el("div", { class: "muted" }, r.auto_explain) : null);
  const rows = (r.backends || []).map((b) => el("tr", {},
    el("td", { class: "mono" }, b.name, b.auto ? el("span", { class: "badge auto" }, "auto") : null),
    el("td", {}, badge(b.health ? b.health.state : "")),
    el("td", {}, b.isolation || ""),
    el("td", {}, b.remote ? "remote (hosted)" : "local"),
    el("td", { class: "mono" }, b.package_manager || ""),
    el("td", { class: "mono" }, b.default_image || ""),
    el("td", { class: "reason" }, b.health && b.health.reason ? b.health.reason : "")));
  $("be-rows").replaceChildren(...rows);
}

// ---------------------------------------------------------------- settings

async function loadSettings() {
  const list = (await api("GET", "/v1/settings/backends")).backends || [];
  $("st-cards").replaceChildren(...list.map(settingsCard));
}

function settingsCard(view) {
  // Fields: the backend's own schema, as the server sends it, then any key the view has
  // that the schema lacks.
  const fields = (view.fields || []).slice();
  for (const k of Object.keys(view.secrets || {})) if (!fields.some((f) => f.key === k)) fields.push({ key: k, secret: true, env: [] });
  for (const k of Object.keys(view.values || {})) if (!fields.some((f) => f.key === k)) fields.push({ key: k, secret: false, env: [] });

  const inputs = [];
  const rows = fields.map((f) => {
    const envHint = f.env && f.env.length ? `env ${f.env.join(" or ")}` : "";
    if (f.secret) {
      const st = (view.secrets || {})[f.key] || {};
      const state = !st.configured ? "not set"
        : st.from_env ? `configured — from env ${st.env || ""}`.trim()
        : "configured";
      const input = el("input", { type: "password", autocomplete: "new-password", name: f.key,
        placeholder: st.configured ? "•••••••• (type to replace)" : "token" });
      const clear = st.configured && !st.from_env
        ? el("input", { type: "checkbox", name: f.key + ".clear" }) : null;
      inputs.push({ key: f.key, secret: true, input, clear });
      return el("div", { class: "field" },
        el("label", { class: "mono" }, f.key), input,
        el("div", { class: "sub" }, el("span", { class: st.configured ? "s-ready" : "muted" }, state),
          envHint && !st.from_env ? ` · ${envHint}` : "",
          clear ? el("label", { class: "inline" }, " · ", clear, " remove stored value") : null));
    }
    const val = (view.values || {})[f.key] || "";
    const input = el("input", { type: "text", name: f.key, value: val, placeholder: "not set" });
    inputs.push({ key: f.key, secret: false, input, orig: val });
    const hint = [f.doc, envHint].filter(Boolean).join(" · ");
    return el("div", { class: "field" }, el("label", { class: "mono" }, f.key), input,
      hint ? el("div", { class: "sub" }, hint) : null);
  });

  const save = el("button", { type: "submit", class: "primary" }, "Save");
  const form = el("form", { class: "card", autocomplete: "off", dataset: { backend: view.name },
    onsubmit: guard(async () => {
      const changes = {};
      for (const i of inputs) {
        if (i.secret) {
          if (i.input.value !== "") changes[i.key] = i.input.value;
          else if (i.clear && i.clear.checked) changes[i.key] = null;
        } else if (i.input.value.trim() !== i.orig) {
          changes[i.key] = i.input.value.trim() === "" ? null : i.input.value.trim();
        }
      }
      const keys = Object.keys(changes);
      if (!keys.length) { flash(`${view.name}: nothing changed.`); return; }
      save.disabled = true;
      try {
        const next = await api("PUT", `/v1/settings/backends/${enc(view.name)}`, { json: changes });
        form.replaceWith(settingsCard(next));
        flash(`Saved ${view.name}: ${keys.join(", ")}. The backend uses it now.`);
      } finally {
        save.disabled = false;
      }
    }) },
    el("h3", {}, el("span", { class: "mono" }, view.name),
      el("span", { class: "badge " + (view.token_configured ? "s-ready" : "s-other") },
        view.token_configured ? (view.from_env ? "configured (env)" : "configured") : "not configured")),
    rows,
    el("div", { class: "row" }, save, el("span", { class: "muted" }, "applies at once; sandboxes keep the endpoint they were created on")));
  return form;
}

// ---------------------------------------------------------------- sessions

function sessionID() {
  const s = $("sess-id").value.trim();
  if (!s) throw new Error("invalid_argument: enter a session id");
  return s;
}
const sessionURL = (s) => `/v1/sessions/${enc(s)}`;
function sessResult(...parts) { $("sess-result").replaceChildren(...parts); }

// sizeText writes bytes the way parseBytes reads them ("512m").
function sizeText(n) {
  if (!n) return "";
  for (const [u, m] of [["t", 2 ** 40], ["g", 1 << 30], ["m", 1 << 20], ["k", 1 << 10]]) {
    if (n % m === 0) return `${n / m}${u}`;
  }
  return String(n);
}
const pairsText = (o) => Object.entries(o || {}).map(([k, v]) => `${k}=${v}`).join("\n");

async function loadSessionsView() {
  await loadBackendNames();
  await loadSessions();
}

async function loadSessions() {
  const list = (await api("GET", "/v1/sessions")).sessions || [];
  const l = (s) => s.limits || {};
  const rows = list.map((s) => el("tr", { dataset: { session: s.id } },
    el("td", { class: "mono" }, el("button", { type: "button", class: "link", title: "Edit", onclick: () => { showSession(s); } }, s.id)),
    el("td", {}, s.backend || "default"),
    el("td", {}, s.mode === "host" ? badge("host") : "isolated"),
    el("td", { class: "mono" }, s.image || ""),
    el("td", {}, sizeText(l(s).memory_bytes)),
    el("td", {}, l(s).cpus || ""),
    el("td", {}, l(s).pids || ""),
    el("td", {}, s.network || ""),
    el("td", { title: s.updated_at || "" }, fmtTime(s.updated_at))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { class: "empty", colspan: 9 }, "No session has settings. Save some below.")));
  $("sess-rows").replaceChildren(...rows);
}

// showSession puts s into the form.
function showSession(s) {
  const l = s.limits || {};
  $("sess-id").value = s.id;
  const b = $("sess-backend");
  if (s.backend && ![...b.options].some((o) => o.value === s.backend)) b.append(el("option", { value: s.backend }, s.backend));
  b.value = s.backend || "";
  $("sess-image").value = s.image || "";
  $("sess-mode").value = s.mode === "host" ? "host" : "isolated";
  $("sess-memory").value = sizeText(l.memory_bytes);
  $("sess-cpus").value = l.cpus || "";
  $("sess-pids").value = l.pids || "";
  $("sess-network").value = s.network || "";
  $("sess-env").value = pairsText(s.env);
  $("sess-labels").value = pairsText(s.labels);
  sessResult("Session ", el("code", {}, s.id), s.updated_at && !s.updated_at.startsWith("0001-") ? ` (saved ${fmtTime(s.updated_at)})` : "", ".");
}

// sessionFromForm reads the form as a whole session record (PUT replaces).
function sessionFromForm() {
  const s = { id: sessionID(), limits: {} };
  const v = (id) => $(id).value.trim();
  if (v("sess-backend")) s.backend = v("sess-backend");
  if (v("sess-image")) s.image = v("sess-image");
  s.mode = v("sess-mode") || "isolated";
  if (v("sess-network")) s.network = v("sess-network");
  if (v("sess-memory")) s.limits.memory_bytes = parseBytes(v("sess-memory"));
  if (v("sess-cpus")) s.limits.cpus = parseFloat(v("sess-cpus"));
  if (v("sess-pids")) s.limits.pids = parseInt(v("sess-pids"), 10);
  s.env = parsePairs($("sess-env").value, "env");
  s.labels = parsePairs($("sess-labels").value, "label");
  return s;
}

async function sessGet() {
  const s = sessionID();
  try {
    showSession(await api("GET", sessionURL(s)));
  } catch (err) {
    if (err.kind !== "not_found") throw err;
    sessResult("Session ", el("code", {}, s), " has no settings: its sandboxes follow the defaults.");
  }
}
async function sessSet() {
  const body = sessionFromForm();
  const r = await api("PUT", sessionURL(body.id), { json: body });
  showSession(r);
  sessResult("Saved session ", el("code", {}, r.id), ": new sandboxes of it start from these settings.");
  await loadSessions();
}
async function sessClear() {
  const s = sessionID();
  await api("DELETE", sessionURL(s));
  sessResult("Deleted the settings of session ", el("code", {}, s), " (its sandboxes stay).");
  await loadSessions();
}
async function sessDestroy() {
  const s = sessionID();
  if (!window.confirm(`Destroy every sandbox of session ${s}?`)) return;
  const r = await api("DELETE", sessionURL(s) + "/sandboxes");
  const failed = r.failed || [];
  sessResult(`Destroyed ${r.destroyed.length} sandbox${r.destroyed.length === 1 ? "" : "es"} of session `, el("code", {}, s), ".",
    ...failed.map((f) => el("div", { class: "error" }, `${f.id}: ${f.kind}: ${f.error}`)));
  if (failed.length) flash(`${failed.length} sandbox${failed.length === 1 ? "" : "es"} of session ${s} not destroyed`, "error");
}

// ---------------------------------------------------------------- wiring

function init() {
  screen = new Screen($("term"));
  showAuthState();
  for (const b of document.querySelectorAll("#nav button")) b.addEventListener("click", () => showView(b.dataset.view));
  for (const b of document.querySelectorAll("#subtabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  for (const b of document.querySelectorAll("#d-actions button")) b.addEventListener("click", guard(() => lifecycle(b.dataset.op)));
  $("signout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); disconnectTerminal(); showAuthState(); flash("Token forgotten."); });
  $("sb-refresh").addEventListener("click", guard(loadSandboxes));
  $("sb-destroyed").addEventListener("change", guard(loadSandboxes));
  $("create-form").addEventListener("submit", guard(createSandbox));
  $("d-reload").addEventListener("click", guard(loadDetail));
  $("exec-form").addEventListener("submit", guard(runExec));
  $("files-form").addEventListener("submit", guard(listFiles));
  $("files-up").addEventListener("click", guard(() => { $("files-path").value = parentPath($("files-path").value.trim() || "/"); return listFiles(); }));
  $("upload-form").addEventListener("submit", guard(upload));
  $("term-form").addEventListener("submit", guard(connectTerminal));
  $("term-disconnect").addEventListener("click", disconnectTerminal);
  $("term").addEventListener("keydown", (e) => {
    if (!ws) return;
    const s = keyBytes(e);
    if (s === null) return;
    e.preventDefault();
    sendKeys(s);
  });
  $("term").addEventListener("paste", (e) => {
    if (!ws) return;
    e.preventDefault();
    sendKeys(e.clipboardData.getData("text"));
  });
  window.addEventListener("resize", onWindowResize);
  $("be-refresh").addEventListener("click", guard(loadBackends));
  $("st-refresh").addEventListener("click", guard(loadSettings));
  $("sess-get").addEventListener("click", guard(sessGet));
  $("sess-form").addEventListener("submit", guard(sessSet));
  $("sess-clear").addEventListener("click", guard(sessClear));
  $("sess-destroy").addEventListener("click", guard(sessDestroy));
  $("sess-refresh").addEventListener("click", guard(loadSessions));
  window.addEventListener("hashchange", route);
  loadBackendNames().catch(fail);
  route();
}

document.addEventListener("DOMContentLoaded", init);
