// edgeanchor portal, Wages page: the run's progress, filtering by status
// without a reload, and names next to worker references computed here.
// The salt and the ID numbers never leave this page: no form holds them,
// nothing sends, stores or logs them.
"use strict";

// sm3 returns the SM3 hash (GB/T 32905-2016) of the bytes msg
// (a Uint8Array) as lowercase hex.
function sm3(msg) {
  var rotl = function (x, n) { n &= 31; return n === 0 ? x : ((x << n) | (x >>> (32 - n))); };
  var p0 = function (x) { return x ^ rotl(x, 9) ^ rotl(x, 17); };
  var p1 = function (x) { return x ^ rotl(x, 15) ^ rotl(x, 23); };
  // Padding: 0x80, zeros to 56 mod 64, the length in bits (64-bit big-endian).
  var n = msg.length;
  var total = (((n + 8) >> 6) + 1) << 6;
  var buf = new Uint8Array(total);
  buf.set(msg);
  buf[n] = 0x80;
  var view = new DataView(buf.buffer);
  var bits = n * 8;
  view.setUint32(total - 8, Math.floor(bits / 0x100000000));
  view.setUint32(total - 4, bits >>> 0);
  var v = [0x7380166f, 0x4914b2b9, 0x172442d7, 0xda8a0600, 0xa96f30bc, 0x163138aa, 0xe38dee4d, 0xb0fb0e4e];
  var w = new Array(68), w1 = new Array(64);
  for (var off = 0; off < total; off += 64) {
    var j;
    for (j = 0; j < 16; j++) { w[j] = view.getUint32(off + 4 * j) | 0; }
    for (j = 16; j < 68; j++) {
      w[j] = p1(w[j - 16] ^ w[j - 9] ^ rotl(w[j - 3], 15)) ^ rotl(w[j - 13], 7) ^ w[j - 6];
    }
    for (j = 0; j < 64; j++) { w1[j] = w[j] ^ w[j + 4]; }
    var a = v[0], b = v[1], c = v[2], d = v[3], e = v[4], f = v[5], g = v[6], h = v[7];
    for (j = 0; j < 64; j++) {
      var t = j < 16 ? 0x79cc4519 : 0x7a879d8a;
      var a12 = rotl(a, 12);
      var ss1 = rotl((a12 + e + rotl(t, j)) | 0, 7);
      var ss2 = ss1 ^ a12;
      var ff = j < 16 ? (a ^ b ^ c) : ((a & b) | (a & c) | (b & c));
      var gg = j < 16 ? (e ^ f ^ g) : ((e & f) | (~e & g));
      var tt1 = (ff + d + ss2 + w1[j]) | 0;
      var tt2 = (gg + h + ss1 + w[j]) | 0;
      d = c; c = rotl(b, 9); b = a; a = tt1;
      h = g; g = rotl(f, 19); f = e; e = p0(tt2);
    }
    v[0] ^= a; v[1] ^= b; v[2] ^= c; v[3] ^= d; v[4] ^= e; v[5] ^= f; v[6] ^= g; v[7] ^= h;
  }
  var out = "";
  for (var k = 0; k < 8; k++) { out += ("00000000" + (v[k] >>> 0).toString(16)).slice(-8); }
  return out;
}

// hexBytes reads hex (whitespace around it ignored) into bytes, or throws.
function hexBytes(s) {
  s = s.trim();
  if (s.length === 0 || s.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(s)) {
    throw new Error("want the salt in hex (an even number of 0-9, a-f)");
  }
  var out = new Uint8Array(s.length / 2);
  for (var i = 0; i < out.length; i++) { out[i] = parseInt(s.substr(2 * i, 2), 16); }
  return out;
}

// personRef is device.PersonRef: hex SM3(salt ‖ UTF-8 of id).
function personRef(salt, id) {
  var idb = new TextEncoder().encode(id);
  var m = new Uint8Array(salt.length + idb.length);
  m.set(salt);
  m.set(idb, salt.length);
  return sm3(m);
}

// nameList maps the references of "ID,name" (or "ID") lines to names,
// as wages.Names does.
function nameList(salt, text) {
  var out = {};
  var lines = text.split(/\r?\n/);
  for (var i = 0; i < lines.length; i++) {
    if (lines[i].trim() === "") { continue; }
    var parts = lines[i].split(",");
    var id = parts[0].trim();
    if (id === "" || parts.length > 2) { throw new Error("ID list line " + (i + 1) + ": want ID or ID,name"); }
    out[personRef(salt, id)] = parts.length === 2 ? parts[1].trim() : id;
  }
  return out;
}

document.addEventListener("DOMContentLoaded", function () {
  // The run's progress: poll its status, move the bar, reload when done.
  var run = document.getElementById("wage-run");
  if (run && run.dataset.done !== "true") {
    var bar = document.getElementById("bar");
    var label = document.getElementById("bar-label");
    var poll = function () {
      fetch(run.dataset.status, { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (st) {
          bar.max = Math.max(st.total, 1);
          bar.value = st.done;
          label.textContent = (st.phase || "starting") + ": " + st.done + " / " + st.total;
          if (st.finished) { window.location.reload(); } else { setTimeout(poll, 300); }
        })
        .catch(function () { setTimeout(poll, 1000); });
    };
    poll();
  }

  // Filter by status in the page (the links work without this, by reload;
  // here the names shown stay).
  var rows = document.querySelectorAll("#workers tr[data-ref]");
  document.querySelectorAll("a.filter").forEach(function (a) {
    a.addEventListener("click", function (ev) {
      if (!rows.length) { return; }
      ev.preventDefault();
      var want = a.dataset.status;
      document.querySelectorAll("a.filter").forEach(function (x) { x.classList.toggle("on", x === a); });
      var shown = 0;
      rows.forEach(function (r) {
        var on = want === "" || r.dataset.status === want;
        r.hidden = !on;
        if (on) { shown++; }
      });
      document.getElementById("workers").dataset.shown = String(shown);
      history.replaceState(null, "", a.getAttribute("href"));
    });
  });

  // Names: computed here from the salt and the ID list; nothing is sent.
  var btn = document.getElementById("map-names");
  if (btn) {
    btn.addEventListener("click", function () {
      var result = document.getElementById("names-result");
      try {
        var names = nameList(hexBytes(document.getElementById("salt").value), document.getElementById("ids").value);
        var matched = 0;
        document.querySelectorAll("#workers tr[data-ref]").forEach(function (r) {
          var n = names[r.dataset.ref];
          r.querySelector("td.name").textContent = n === undefined ? "" : n;
          if (n !== undefined) { matched++; }
        });
        result.textContent = Object.keys(names).length + " ID(s), " + matched + " matched a worker in this report";
        result.className = "";
      } catch (e) {
        result.textContent = e.message;
        result.className = "error";
      }
    });
  }
  document.body.dataset.wagesReady = "1";
});
