/* Shared by the dashboard and the shop: the admin token and the sidecar's URL, from the
   page's query string (?token=..., ?sidecar=http://host:port). */
var recofastPage = (function () {
  var q = new URLSearchParams(location.search);
  var token = q.get("token") || "";
  var sidecar = (q.get("sidecar") || (location.protocol + "//" + location.hostname + ":8080")).replace(/\/+$/, "");
  function keep(path) {
    var p = new URLSearchParams();
    if (token) p.set("token", token);
    if (q.get("sidecar")) p.set("sidecar", sidecar);
    var s = p.toString();
    return s ? path + "?" + s : path;
  }
  function engine(path) {
    return fetch(path, {headers: token ? {Authorization: "Bearer " + token} : {}, cache: "no-store"}).then(function (r) {
      if (!r.ok) throw new Error(path + ": HTTP " + r.status);
      return r.json();
    });
  }
  return {token: token, sidecar: sidecar, keep: keep, engine: engine};
})();
