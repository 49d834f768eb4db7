// edgeanchor portal: small enhancements; every page works without them.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  // Verify: a dropped file goes into the file input.
  var drop = document.getElementById("drop");
  var input = document.getElementById("bundle");
  if (drop && input) {
    ["dragenter", "dragover"].forEach(function (e) {
      drop.addEventListener(e, function (ev) { ev.preventDefault(); drop.classList.add("over"); });
    });
    drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
    drop.addEventListener("drop", function (ev) {
      ev.preventDefault();
      drop.classList.remove("over");
      if (ev.dataTransfer && ev.dataTransfer.files.length) {
        input.files = ev.dataTransfer.files;
        document.getElementById("verify-form").submit();
      }
    });
  }
  // Audit: poll the run's status and move the bar; reload when done.
  var run = document.getElementById("audit-run");
  if (run && run.dataset.done !== "true") {
    var bar = document.getElementById("bar");
    var label = document.getElementById("bar-label");
    var poll = function () {
      fetch(run.dataset.status, { credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (st) {
          bar.max = Math.max(st.total, 1);
          bar.value = st.done;
          label.textContent = st.done + " / " + st.total + " batches";
          if (st.finished) { window.location.reload(); } else { setTimeout(poll, 300); }
        })
        .catch(function () { setTimeout(poll, 1000); });
    };
    poll();
  }
});
