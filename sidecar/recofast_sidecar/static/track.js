/* recofast track.js: events from the shop's pages to the sidecar, attributed to the lists shown.

   <script src="https://SIDECAR/v1/track.js" data-user="SHOPPER_ID"></script>

   - recofast.track(type, user, item, extra) sends one event v1 (extra: price, qty, rec_id, ...).
   - The one line for attribution: render each item of a served list with its list's rec_id,
       <a href="/p/42" data-recofast-item="42" data-recofast-rec="{{rec_id}}">...</a>
     and a click on it is sent as a `click` carrying that rec_id. The rec_id is remembered for
     the session (sessionStorage), so a later add_to_cart or purchase of the item tracked with
     recofast.track carries it too.
   - recofast.recommend(user, params) fetches /v1/recommendations/{user} and remembers the
     answer's rec_id for its items; recofast.shown(list) remembers a list fetched otherwise.
   The user is data-user on the script tag, or recofast.user. With user tokens on, set
   recofast.token to the shopper's token first (sent as ?token=). */
(function (w, d) {
  var me = d.currentScript;
  var s = me && me.src;
  var base = s ? s.replace(/\/v1\/track\.js.*$/, "") : "";
  var ep = base + "/v1/events";
  var KEY = "recofast.rec", MAX = 200;
  var R = w.recofast = w.recofast || {};
  if (me && me.getAttribute("data-user") && R.user == null) R.user = me.getAttribute("data-user");
  function id() {
    return w.crypto && crypto.randomUUID ? crypto.randomUUID() : Date.now() + "-" + Math.random().toString(36).slice(2);
  }
  function load() {
    try { return JSON.parse(w.sessionStorage.getItem(KEY) || "{}") || {}; } catch (e) { return {}; }
  }
  function remember(item, rec) {
    var m = load(), keys;
    delete m[item];
    m[item] = rec;
    keys = Object.keys(m);
    while (keys.length > MAX) delete m[keys.shift()];
    try { w.sessionStorage.setItem(KEY, JSON.stringify(m)); } catch (e) { /* storage off or full: no memory */ }
  }
  function withToken(url) {
    return R.token ? url + (url.indexOf("?") < 0 ? "?" : "&") + "token=" + encodeURIComponent(R.token) : url;
  }
  R.shown = function (list) {
    if (!list || !list.rec_id || !list.items) return list;
    for (var i = 0; i < list.items.length; i++) remember(String(list.items[i].item), list.rec_id);
    return list;
  };
  R.recommend = function (user, params) {
    var q = [];
    for (var k in params || {}) q.push(encodeURIComponent(k) + "=" + encodeURIComponent(params[k]));
    var url = base + "/v1/recommendations/" + encodeURIComponent(String(user)) + (q.length ? "?" + q.join("&") : "");
    return fetch(withToken(url)).then(function (r) { return r.json(); }).then(R.shown);
  };
  R.track = function (type, user, item, extra) {
    var e = {v: 1, id: id(), type: type, user: String(user), ts: Date.now(), context: {ua: navigator.userAgent}};
    if (item != null) {
      e.item = String(item);
      var rec = load()[e.item];
      if (rec && type !== "view" && type !== "search") e.rec_id = rec;
    }
    for (var k in extra || {}) e[k] = extra[k];
    var body = JSON.stringify(e);
    var url = withToken(ep);
    /* text/plain keeps a cross-origin beacon a simple request (no CORS preflight). */
    if (!(navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], {type: "text/plain"})))) {
      fetch(url, {method: "POST", body: body, keepalive: true, headers: {"Content-Type": "text/plain"}});
    }
    return e;
  };
  d.addEventListener("click", function (ev) {
    var el = ev.target && ev.target.closest ? ev.target.closest("[data-recofast-item]") : null;
    if (!el) return;
    var user = el.getAttribute("data-recofast-user") || R.user;
    if (user == null) return;
    var item = el.getAttribute("data-recofast-item"), rec = el.getAttribute("data-recofast-rec");
    if (rec) remember(item, rec);
    R.track("click", user, item, rec ? {rec_id: rec} : {});
  }, true);
})(window, document);
