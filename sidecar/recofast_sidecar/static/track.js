/* recofast track.js: recofast.track(type, user, item, extra) sends one event v1 to the sidecar.
   With user tokens on, set recofast.token to the shopper's token first (sent as ?token=). */
(function (w) {
  var s = document.currentScript && document.currentScript.src;
  var ep = (s ? s.replace(/\/v1\/track\.js.*$/, "") : "") + "/v1/events";
  function id() {
    return w.crypto && crypto.randomUUID ? crypto.randomUUID() : Date.now() + "-" + Math.random().toString(36).slice(2);
  }
  w.recofast = w.recofast || {};
  w.recofast.track = function (type, user, item, extra) {
    var e = {v: 1, id: id(), type: type, user: String(user), ts: Date.now(), context: {ua: navigator.userAgent}};
    if (item != null) e.item = String(item);
    for (var k in extra || {}) e[k] = extra[k];
    var body = JSON.stringify(e);
    var url = w.recofast.token ? ep + "?token=" + encodeURIComponent(w.recofast.token) : ep;
    /* text/plain keeps a cross-origin beacon a simple request (no CORS preflight). */
    if (!(navigator.sendBeacon && navigator.sendBeacon(url, new Blob([body], {type: "text/plain"})))) {
      fetch(url, {method: "POST", body: body, keepalive: true, headers: {"Content-Type": "text/plain"}});
    }
  };
})(window);
