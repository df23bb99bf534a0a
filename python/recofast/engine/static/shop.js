/* The demo shop: the shopper's list from the sidecar (with each item's reason), rendered with
   data-recofast-item / data-recofast-rec so the sidecar's track.js sends a click carrying the
   list's rec_id; a view follows, and the list is fetched again. */
(function () {
  "use strict";
  var P = recofastPage, REFRESH_MS = 700;
  var userEl = document.getElementById("user"), itemsEl = document.getElementById("items");
  var infoEl = document.getElementById("info"), changesEl = document.getElementById("changes");
  var last = null, lists = 0, changed = 0;
  document.getElementById("dash-link").href = P.keep("/dashboard");
  var dl = document.getElementById("users");
  for (var i = 0; i < 50; i++) { var o = document.createElement("option"); o.value = "shopper" + i; dl.appendChild(o); }

  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; }); }
  function user() { return userEl.value.trim() || "shopper1"; }

  function show() {
    return window.recofast.recommend(user(), {k: 10}).then(function (list) {
      var ids = (list.items || []).map(function (it) { return it.item; }).join(",");
      lists++;
      if (last !== null && last.user === user() && last.ids !== ids) changed++;
      last = {user: user(), ids: ids};
      infoEl.textContent = "source " + list.source + (list.variant ? ", variant " + list.variant : "") + ", model v" + list.model_version + ", rec_id " + list.rec_id;
      itemsEl.innerHTML = (list.items || []).map(function (it, pos) {
        return '<li data-recofast-item="' + esc(it.item) + '" data-recofast-rec="' + esc(list.rec_id) + '" data-recofast-user="' + esc(user()) +
          '"><b>' + (pos + 1) + ". " + esc(it.item) + '</b><div class="reason">' + esc(it.reason || "") + "</div><div class=\"reason\">score " +
          (typeof it.score === "number" ? it.score.toFixed(3) : "-") + "</div></li>";
      }).join("");
      itemsEl.setAttribute("data-lists", String(lists));
      itemsEl.setAttribute("data-changed", String(changed));
      changesEl.textContent = lists + " lists fetched, " + changed + " changed after a click";
    }).catch(function (e) { infoEl.textContent = "the sidecar did not answer: " + e.message; });
  }

  itemsEl.addEventListener("click", function (ev) {
    var li = ev.target.closest("[data-recofast-item]");
    if (!li) return;  /* track.js has sent the click (capture phase, before this) */
    window.recofast.track("view", user(), li.getAttribute("data-recofast-item"), {rec_id: li.getAttribute("data-recofast-rec")});
    setTimeout(show, REFRESH_MS);
  });
  document.getElementById("load").addEventListener("click", function () { last = null; show(); });
  userEl.addEventListener("change", function () { last = null; show(); });

  var s = document.createElement("script");
  s.src = P.sidecar + "/v1/track.js";
  s.onload = show;
  s.onerror = function () { infoEl.textContent = "could not load " + s.src + " (?sidecar=URL)"; };
  document.head.appendChild(s);
})();
